//! `cargo unikernel new`: a new app crate from a template embedded in the
//! binary (so an installed `cargo-unikernel` needs no source tree for this).
use std::path::Path;

/// A template: its name, the package name its Cargo.toml carries (replaced
/// by the new crate's name), and its files (path relative to the crate,
/// contents).
pub struct Template {
    pub name: &'static str,
    pub package: &'static str,
    pub about: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

/// Every template, the first is the default.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "hello",
        package: "hello",
        about: "a command-line program (arguments, environment, exit code)",
        files: &[
            (
                "Cargo.toml",
                include_str!("../../templates/hello/Cargo.toml"),
            ),
            (
                "src/main.rs",
                include_str!("../../templates/hello/src/main.rs"),
            ),
            (
                ".gitignore",
                include_str!("../../templates/hello/.gitignore"),
            ),
        ],
    },
    Template {
        name: "http",
        package: "web",
        about: "an HTTP service (axum on tokio) listening on $PORT (8080)",
        files: &[
            (
                "Cargo.toml",
                include_str!("../../templates/http/Cargo.toml"),
            ),
            (
                "src/main.rs",
                include_str!("../../templates/http/src/main.rs"),
            ),
            (
                ".gitignore",
                include_str!("../../templates/http/.gitignore"),
            ),
        ],
    },
];

/// Names cargo refuses as package names (keywords and reserved names).
const RESERVED: &[&str] = &[
    "abstract",
    "alignof",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "offsetof",
    "override",
    "priv",
    "proc",
    "pub",
    "pure",
    "ref",
    "return",
    "self",
    "sizeof",
    "static",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "build",
    "deps",
    "examples",
    "incremental",
];

/// Check a crate name the way cargo does.
pub fn check_crate_name(name: &str) -> Result<(), String> {
    let fix = "use letters, digits, '-' and '_', starting with a letter (e.g. my-app)";
    let Some(first) = name.chars().next() else {
        return Err(format!("the crate name is empty; {fix}"));
    };
    if !first.is_ascii_alphabetic() && first != '_' {
        return Err(format!(
            "invalid crate name \"{name}\": it must start with a letter; {fix}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && *c != '-' && *c != '_')
    {
        return Err(format!(
            "invalid crate name \"{name}\": character {bad:?} is not allowed; {fix}"
        ));
    }
    if RESERVED.contains(&name) || RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(format!(
            "invalid crate name \"{name}\": it is a Rust keyword or a reserved name; pick another"
        ));
    }
    Ok(())
}

/// Create the crate at `dir` (its last component is the crate name).
pub fn new_crate(dir: &Path, template: &str) -> Result<String, String> {
    let t = TEMPLATES
        .iter()
        .find(|t| t.name == template)
        .ok_or_else(|| {
            let names: Vec<_> = TEMPLATES.iter().map(|t| t.name).collect();
            format!(
                "unknown template \"{template}\" (available: {})",
                names.join(", ")
            )
        })?;
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        format!(
            "{} does not end in a crate name; pass e.g. my-app",
            dir.display()
        )
    })?;
    check_crate_name(name)?;
    if dir.exists() {
        return Err(format!(
            "{} already exists; choose another name or remove it first",
            dir.display()
        ));
    }
    for (path, contents) in t.files {
        let dest = dir.join(path);
        let contents = if *path == "Cargo.toml" {
            contents.replacen(
                &format!("name = \"{}\"", t.package),
                &format!("name = \"{name}\""),
                1,
            )
        } else {
            contents.to_string()
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&dest, contents)
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["hello", "my-app", "my_app2", "_x"] {
            assert_eq!(check_crate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "1app", "my app", "a.b", "é", "fn", "test", "std", "self",
        ] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_carries_the_name_line() {
        for t in TEMPLATES {
            let toml = t.files.iter().find(|f| f.0 == "Cargo.toml").unwrap().1;
            let line = format!("name = \"{}\"", t.package);
            assert!(toml.contains(&line), "{}", t.name);
        }
    }

    #[test]
    fn creates_crate_and_refuses_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-app");
        assert_eq!(new_crate(&dir, "hello").unwrap(), "my-app");
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"my-app\"") && !toml.contains("name = \"hello\""));
        assert!(dir.join("src/main.rs").is_file() && dir.join(".gitignore").is_file());
        let e = new_crate(&dir, "hello").unwrap_err();
        assert!(e.contains("already exists"), "{e}");
        let e = new_crate(&tmp.path().join("x"), "nope").unwrap_err();
        assert!(
            e.contains("unknown template \"nope\" (available: hello, http)"),
            "{e}"
        );
        let e = new_crate(&tmp.path().join("9lives"), "hello").unwrap_err();
        assert!(e.contains("must start with a letter"), "{e}");
    }
}
