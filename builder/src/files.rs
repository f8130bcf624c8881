//! Embedded files: `[package.metadata.unikernel] files = ["static/**",
//! "config.toml"]` (globs relative to the crate) become the image's
//! read-only files archive (`unikernel_image::files`), shown under `/` (or
//! under `files_root`) at the same relative paths.
//!
//! A pattern that matches a directory takes the whole tree below it; a
//! pattern that matches nothing is an error (a typo would otherwise ship
//! an image without its assets). Files keep their permission bits minus
//! the write bits; directories are `r-xr-xr-x`.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use unikernel_image::files::{encode, S_IFDIR, S_IFREG};

/// Top-level names of the root tree the runtime owns.
const RESERVED: &[&str] = &["dev", "proc", "tmp"];

/// The archive and what is in it.
#[derive(Debug)]
pub struct EmbeddedFiles {
    pub archive: Vec<u8>,
    /// Regular files (directories not counted).
    pub files: usize,
    /// Bytes of file contents.
    pub bytes: u64,
}

/// Collect the files `patterns` name below `crate_dir`, placed under
/// `root` (`"/"` or an absolute directory, already checked). `mounts` are
/// the declared disks' mount points (no embedded file may sit inside one).
/// `None` without patterns.
pub fn collect(
    crate_dir: &Path,
    patterns: &[String],
    root: &str,
    mounts: &[String],
) -> Result<Option<EmbeddedFiles>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // Archive path (relative, '/'-separated) -> (host path or None for a directory).
    let mut entries: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    let prefix: Vec<String> = root
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    for pattern in patterns {
        check_pattern(pattern)?;
        // `dir/**`: the glob crate's `**` matches directories only; a
        // directory match takes its whole tree anyway.
        let glob_pattern = pattern
            .strip_suffix("/**")
            .filter(|p| !p.is_empty())
            .unwrap_or(pattern);
        let full = crate_dir.join(glob_pattern);
        let full = full
            .to_str()
            .ok_or_else(|| format!("files pattern \"{pattern}\": the crate's path is not UTF-8"))?;
        let matches =
            glob::glob(full).map_err(|e| format!("bad files pattern \"{pattern}\": {e}"))?;
        let mut any = false;
        for m in matches {
            let path = m.map_err(|e| format!("files pattern \"{pattern}\": {e}"))?;
            any = true;
            add_tree(crate_dir, &path, &prefix, &mut entries)?;
        }
        if !any {
            return Err(format!(
                "files pattern \"{pattern}\" matches nothing in {}",
                crate_dir.display()
            ));
        }
    }
    for p in entries.keys() {
        let first = p.split('/').next().unwrap_or("");
        if RESERVED.contains(&first) {
            return Err(format!(
                "embedded file /{p} would hide the runtime's /{first}: move it or set files_root"
            ));
        }
        for m in mounts {
            let m = m.trim_start_matches('/');
            if p == m || p.starts_with(&format!("{m}/")) {
                return Err(format!(
                    "embedded file /{p} lies inside the mount point /{m} of a declared disk"
                ));
            }
        }
    }
    let mut list = Vec::with_capacity(entries.len());
    let (mut files, mut bytes) = (0usize, 0u64);
    for (p, host) in entries {
        match host {
            None => list.push((p, S_IFDIR | 0o555, Vec::new())),
            Some(h) => {
                let data = std::fs::read(&h)
                    .map_err(|e| format!("cannot read embedded file {}: {e}", h.display()))?;
                let mode = file_mode(&h);
                files += 1;
                bytes += data.len() as u64;
                list.push((p, S_IFREG | mode, data));
            }
        }
    }
    if list.len() > u32::MAX as usize {
        return Err("too many embedded files".to_string());
    }
    Ok(Some(EmbeddedFiles {
        archive: encode(&list),
        files,
        bytes,
    }))
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    let p = Path::new(pattern);
    if p.is_absolute() {
        return Err(format!(
            "files pattern \"{pattern}\" is absolute: write it relative to the crate's directory"
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "files pattern \"{pattern}\" leaves the crate's directory ('..')"
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0o444, |m| m.permissions().mode() & 0o555)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> u32 {
    0o444
}

/// Add `path` (a file, or a directory with everything below it) and its
/// parent directories up to the crate.
fn add_tree(
    crate_dir: &Path,
    path: &Path,
    prefix: &[String],
    entries: &mut BTreeMap<String, Option<PathBuf>>,
) -> Result<(), String> {
    let rel = path.strip_prefix(crate_dir).map_err(|_| {
        format!(
            "embedded file {} is outside the crate {}",
            path.display(),
            crate_dir.display()
        )
    })?;
    let mut parts: Vec<String> = prefix.to_vec();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| format!("embedded file {}: name is not UTF-8", path.display()))?
                    .to_string(),
            ),
            Component::CurDir => {}
            _ => return Err(format!("embedded file {}: unexpected path", path.display())),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "files pattern matches the crate's own directory {}: name files or subdirectories",
            crate_dir.display()
        ));
    }
    for i in 1..parts.len() {
        entries.entry(parts[..i].join("/")).or_insert(None);
    }
    let key = parts.join("/");
    if key.len() > u16::MAX as usize {
        return Err(format!("embedded file path too long: {key}"));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read embedded file {}: {e}", path.display()))?;
    if meta.is_dir() {
        entries.entry(key).or_insert(None);
        let mut children: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot list {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            add_tree(crate_dir, &c.path(), prefix, entries)?;
        }
    } else if meta.is_file() {
        if let Some(None) = entries.get(&key) {
            return Err(format!(
                "embedded path /{key} is both a file and a directory"
            ));
        }
        entries.insert(key, Some(path.to_path_buf()));
    }
    // Other kinds (sockets, fifos) are skipped.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikernel_image::files::Archive;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("static/css")).unwrap();
        std::fs::write(d.path().join("static/index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(d.path().join("static/css/a.css"), "body{}").unwrap();
        std::fs::write(d.path().join("config.toml"), "port = 8080\n").unwrap();
        d
    }

    fn paths(e: &EmbeddedFiles) -> Vec<(String, bool, Vec<u8>)> {
        Archive::parse(&e.archive)
            .unwrap()
            .entries()
            .map(|x| (x.path.to_string(), x.is_dir(), x.data.to_vec()))
            .collect()
    }

    #[test]
    fn globs_and_directories() {
        let d = tree();
        let e = collect(
            d.path(),
            &["static/**".into(), "config.toml".into()],
            "/",
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.files, 3);
        assert_eq!(e.bytes, 11 + 6 + 12);
        let p = paths(&e);
        let names: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "config.toml",
                "static",
                "static/css",
                "static/css/a.css",
                "static/index.html"
            ]
        );
        assert!(p[1].1 && !p[0].1);
        assert_eq!(p[4].2, b"<h1>hi</h1>");
        // A directory pattern takes the tree.
        let e = collect(d.path(), &["static".into()], "/srv/www", &[])
            .unwrap()
            .unwrap();
        let names: Vec<String> = paths(&e).into_iter().map(|x| x.0).collect();
        assert!(
            names.contains(&"srv/www/static/css/a.css".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"srv".to_string()));
    }

    #[test]
    fn refusals() {
        let d = tree();
        let e = collect(d.path(), &["nope/*".into()], "/", &[]).unwrap_err();
        assert!(e.contains("matches nothing"), "{e}");
        let e = collect(d.path(), &["/etc/passwd".into()], "/", &[]).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = collect(d.path(), &["../x".into()], "/", &[]).unwrap_err();
        assert!(e.contains(".."), "{e}");
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        std::fs::write(d.path().join("tmp/x"), "x").unwrap();
        let e = collect(d.path(), &["tmp/x".into()], "/", &[]).unwrap_err();
        assert!(e.contains("/tmp"), "{e}");
        let e = collect(d.path(), &["static/**".into()], "/", &["/static".into()]).unwrap_err();
        assert!(e.contains("mount point"), "{e}");
        assert!(collect(d.path(), &[], "/", &[]).unwrap().is_none());
    }
}
