// Builds workspace crates into WebAssembly components, in the manner of
// wasmtime's `test-programs`: a nested `cargo build --target wasm32-wasip2`
// from a build script, with its own target directory so that it never waits
// on the outer build's lock. Shared by the gateway's build script (built-in
// plugins) and the end-to-end tests' (hostile guests), through `#[path]`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";
pub const PROFILE: &str = "guest";

/// Builds `packages` (crate names) and returns each one's component path,
/// in the same order.
pub fn build(packages: &[&str]) -> Vec<PathBuf> {
    let workspace = workspace_root();
    let target_dir = guest_target_dir();
    for dir in [
        "wit",
        "plugin-sdk/src",
        "plugin-sdk/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CALLISTO_GUEST_TARGET_DIR");

    let mut cmd = cargo_for_guests(&workspace);
    cmd.current_dir(&workspace)
        .arg("build")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        cmd.arg("-p").arg(package);
    }
    // Flags meant for the host build (coverage, sanitizers, clippy's driver)
    // would break or slow the guest build, and would change its fingerprint
    // between `cargo build` and `cargo clippy`, rebuilding it each time.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build plugins: {e}"));
    if !status.success() {
        panic!(
            "building {} for {TARGET} failed (see the errors above; a missing target is \
             installed with `rustup target add {TARGET}`)",
            packages.join(", ")
        );
    }

    packages
        .iter()
        .map(|package| {
            let path = target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", package.replace('-', "_")));
            assert!(path.exists(), "{} was not built", path.display());
            path
        })
        .collect()
}

/// The guests are built with the toolchain `rust-toolchain.toml` pins (it
/// lists the wasm32-wasip2 target), even when the host build uses another
/// one, e.g. nightly for `cargo fuzz`; without rustup, with the cargo that
/// runs this build.
fn cargo_for_guests(workspace: &Path) -> Command {
    let pinned = std::fs::read_to_string(workspace.join("rust-toolchain.toml"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("channel"))
                .map(|rest| {
                    rest.trim_start_matches([' ', '='])
                        .trim()
                        .trim_matches('"')
                        .to_owned()
                })
        });
    let rustup = Command::new("rustup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match pinned {
        Some(channel) if rustup => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", &channel, "cargo"]);
            // The outer build's toolchain choice must not leak in.
            cmd.env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC")
                .env_remove("RUSTDOC");
            cmd
        }
        _ => Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
    }
}

/// Watches a guest crate's sources.
pub fn watch_crate(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("Cargo.toml").display()
    );
}

pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"));
    manifest
        .ancestors()
        .find(|dir| dir.join("rust-toolchain.toml").exists())
        .expect("the workspace root holds rust-toolchain.toml")
        .to_path_buf()
}

/// `<outer target dir>/guests`: found as the ancestor of `OUT_DIR` that
/// cargo marked with `CACHEDIR.TAG`, so that debug, release, test and clippy
/// builds share one set of compiled guests.
fn guest_target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CALLISTO_GUEST_TARGET_DIR") {
        return dir.into();
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("run by cargo"));
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .map(|target| target.join("guests"))
        .unwrap_or_else(|| out_dir.join("guests"))
}
