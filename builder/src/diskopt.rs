//! The `--disk NAME=FILE` flag of `cargo unikernel run`: NAME is a disk the
//! image declares (`[package.metadata.unikernel] disks`), FILE the raw
//! volume it gets.
use std::path::PathBuf;

/// Parse one `--disk` value.
pub fn parse_disk_flag(s: &str) -> Result<(String, PathBuf), String> {
    let Some((name, file)) = s.split_once('=') else {
        return Err(format!(
            "expected NAME=FILE (a disk the image declares, e.g. data=data.img), got {s:?}"
        ));
    };
    unikernel_image::disks::check_name(name).map_err(|e| format!("disk name {name:?}: {e}"))?;
    if file.is_empty() {
        return Err(format!("--disk {name}=: no file given"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_file() {
        assert_eq!(
            parse_disk_flag("data=vol/data.img"),
            Ok(("data".to_string(), PathBuf::from("vol/data.img")))
        );
        // The file may itself contain '='.
        assert_eq!(
            parse_disk_flag("data=a=b.img").unwrap().1,
            PathBuf::from("a=b.img")
        );
        assert!(parse_disk_flag("data.img")
            .unwrap_err()
            .contains("NAME=FILE"));
        assert!(parse_disk_flag("Data=x").unwrap_err().contains("disk name"));
        assert!(parse_disk_flag("data=").unwrap_err().contains("no file"));
    }
}
