// Builds workspace crates into WebAssembly components, in the manner of
// wasmtime's `test-programs`: a nested `cargo build --target wasm32-wasip2`
// from a build script, with its own target directory so that it never waits
// on the outer build's lock. Shared by the gateway's build script (built-in
// plugins) and the end-to-end tests' (hostile guests), through `#[path]`.

use std::env;
use std::fs::File;
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

    // Before compiling anything for the target, make sure the toolchain has
    // it: otherwise the nested build fails with `can't find crate for std`.
    // How early this runs is cargo's choice: this script needs no other
    // crate, but cargo starts first the ready units that most others wait
    // on, and only the gateway waits on this one. On two cores that puts
    // it after wasmtime, near the end (measured: 490 s into a cold release
    // build sharing the cores with another build). With rustup a missing
    // target costs a download here; without rustup, that wait ends in the
    // message below instead of a compiler error.
    let toolchain = Toolchain::for_guests(&workspace);
    toolchain.ensure_target(&target_dir);

    let mut cmd = toolchain.command("cargo");
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
            "building {} for {TARGET} failed (see the errors above)",
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

/// The toolchain that builds the guests.
enum Toolchain {
    /// The one `rust-toolchain.toml` pins (it lists the wasm32-wasip2
    /// target), run through rustup, even when the host build uses another
    /// one, e.g. nightly for `cargo fuzz`.
    Rustup { channel: String },
    /// Without rustup: the cargo and rustc that run this build.
    Plain,
}

impl Toolchain {
    fn for_guests(workspace: &Path) -> Self {
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
            Some(channel) if rustup => Toolchain::Rustup { channel },
            _ => Toolchain::Plain,
        }
    }

    /// `cargo` or `rustc` of this toolchain.
    fn command(&self, tool: &str) -> Command {
        match self {
            Toolchain::Rustup { channel } => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", channel, tool]);
                // The outer build's toolchain choice must not leak in.
                cmd.env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("RUSTC")
                    .env_remove("RUSTDOC");
                cmd
            }
            Toolchain::Plain => {
                let var = if tool == "cargo" { "CARGO" } else { "RUSTC" };
                Command::new(env::var_os(var).unwrap_or_else(|| tool.into()))
            }
        }
    }

    /// Where the toolchain keeps the target's standard library
    /// (`rustc --print target-libdir`), and whether a `libstd` is there.
    /// Fails when the toolchain's rustc cannot be run at all.
    fn target_libdir(&self) -> Result<(PathBuf, bool), String> {
        let out = self
            .command("rustc")
            .args(["--print", "target-libdir", "--target", TARGET])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let found = std::fs::read_dir(&libdir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libstd-") && name.ends_with(".rlib")
            })
        });
        Ok((libdir, found))
    }

    /// Makes sure the target is installed before anything is compiled for
    /// it. Through rustup a missing target is added (what rustup itself does
    /// when it installs the pinned toolchain, but not when the toolchain is
    /// already there without it); otherwise the build stops here with the
    /// command to run. `lock_dir` holds the lock that keeps two build
    /// scripts (the gateway's and the tests') from installing at once.
    fn ensure_target(&self, lock_dir: &Path) {
        let check = || match self.target_libdir() {
            Ok(found) => found,
            Err(err) => match self {
                Toolchain::Rustup { channel } => panic!(
                    "\nthe toolchain {channel} that rust-toolchain.toml pins cannot be run \
                     ({err}).\nInstall it with its {TARGET} target:\n\n    \
                     rustup toolchain install {channel} --profile minimal --target {TARGET}\n\n"
                ),
                Toolchain::Plain => panic!("\ncannot run rustc to look for {TARGET}: {err}\n\n"),
            },
        };
        let (libdir, found) = check();
        if found {
            return;
        }
        let Toolchain::Rustup { channel } = self else {
            panic!(
                "\nthe built-in plugins are compiled for {TARGET}, but the rustc running this \
                 build has no standard library for it (nothing in {}), and without rustup \
                 this build cannot add it.\nWith rustup (https://rustup.rs) it is:\n\n    \
                 rustup target add {TARGET}\n\n",
                libdir.display()
            );
        };
        let install = format!("rustup target add --toolchain {channel} {TARGET}");
        std::fs::create_dir_all(lock_dir).expect("create the guest target directory");
        let lock = File::create(lock_dir.join(".install-target.lock")).expect("create a lock file");
        lock.lock().expect("lock the target installation");
        if check().1 {
            return; // the other build script installed it meanwhile
        }
        eprintln!("{TARGET} is missing from toolchain {channel}: running `{install}`");
        let installed = Command::new("rustup")
            .args(["target", "add", "--toolchain", channel, TARGET])
            .env_remove("RUSTUP_TOOLCHAIN")
            // Cargo reads this script's stdout for instructions.
            .stdout(std::io::stderr())
            .status()
            .is_ok_and(|status| status.success());
        if !installed || !check().1 {
            panic!(
                "\nthe built-in plugins are compiled for {TARGET}, which toolchain \
                 {channel} lacks, and installing it failed (see above).\nInstall it \
                 with:\n\n    {install}\n\n"
            );
        }
        println!(
            "cargo:warning=installed the {TARGET} target, which the built-in plugins are \
             compiled for and toolchain {channel} lacked: `{install}`"
        );
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
