//! Callisto's end-to-end tests, in one binary so that wasmtime and the
//! gateway are linked once.

mod cli_plugin;
mod plugin_host;

/// A compiled-plugin cache shared by every test (and every run), so that
/// each test's plugin host does not compile the built-ins again. Entries are
/// keyed by the component's hash, so a changed plugin never hits a stale one.
pub fn shared_cache_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&dir).expect("create the shared cache directory");
    dir
}
