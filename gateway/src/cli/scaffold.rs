//! `callisto plugin new NAME`: a plugin crate that builds and passes its own
//! test at once (the end-to-end tests run `cargo test` in one).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const CARGO_TOML: &str = include_str!("../../templates/plugin/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../../templates/plugin/lib.rs.tmpl");
const GOLDEN: &str = include_str!("../../templates/plugin/pushed.http.tmpl");
const README: &str = include_str!("../../templates/plugin/README.md.tmpl");
const GITIGNORE: &str = include_str!("../../templates/plugin/gitignore.tmpl");

/// The SDK of the checkout this binary was built from.
const BUILT_WITH_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

/// Names the template imports: a type of the same name would not compile.
const TAKEN: [&str; 7] = [
    "Event",
    "EventType",
    "Plugin",
    "PluginInfo",
    "Request",
    "Webhook",
    "Self",
];

/// Writes the crate of plugin `name` into `dir` (default `./<name>`),
/// depending on the SDK at `sdk` (default: the one this binary was built
/// from). Returns the directory written.
pub fn new_plugin(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = sdk.unwrap_or(Path::new(BUILT_WITH_SDK));
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the plugin SDK is not at {} (give its directory, plugin-sdk/ in a checkout of \
             Callisto, with --sdk)",
            sdk.display()
        )
    })?;
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} has no Cargo.toml: not the plugin SDK", sdk.display());
    }
    let sdk = sdk
        .to_str()
        .with_context(|| format!("{} is not UTF-8", sdk.display()))?;

    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{file}}", &name.replace('-', "_"))
            // A TOML basic string, escaped.
            .replace("{{sdk}}", &toml::Value::String(sdk.to_owned()).to_string())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/golden/pushed.http", GOLDEN.to_owned()),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// A plugin name (what the gateway accepts) that is also a package name
/// (which cannot start with a digit).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if !ok {
        bail!(
            "`{name}` cannot name a plugin: use 1-64 lowercase letters, digits and `-`, \
             starting with a letter"
        );
    }
    Ok(())
}

/// `my-plugin` → `MyPlugin`; `MyPluginPlugin` if that would clash with what
/// the template imports.
fn type_name(name: &str) -> String {
    let camel: String = name
        .split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect();
    if TAKEN.contains(&camel.as_str()) {
        format!("{camel}Plugin")
    } else {
        camel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("discord"), "Discord");
        assert_eq!(type_name("my-team-hook"), "MyTeamHook");
        assert_eq!(type_name("event"), "EventPlugin");
        assert_eq!(type_name("s3--x"), "S3X");
        assert!(check_name("a1-b").is_ok());
        for bad in ["", "1abc", "-a", "a-", "A", "a_b", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_a_directory_in_use() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let err = new_plugin("hello", Some(dir.path()), None).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }
}
