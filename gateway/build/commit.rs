// The commit the binary is built from, for `callisto --version`:
// `0.1.0 (3b3c6b4 2026-11-29)`, the date being the commit's. Packagers
// building outside a git checkout (a source tarball, a container build
// without `.git`) pass it in `CALLISTO_BUILD_COMMIT` and, if they like,
// `CALLISTO_BUILD_DATE`; otherwise it is `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `<short commit> <commit date>`, `<commit>` or `unknown`; watches what
/// changes it, so that a new commit rebuilds the gateway (the build script
/// runs again, and the `callisto` crate is compiled again).
pub fn describe(workspace: &Path) -> String {
    println!("cargo:rerun-if-env-changed=CALLISTO_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=CALLISTO_BUILD_DATE");
    // Checkouts that share a target directory share this script's output,
    // and the files watched below are one checkout's: `tests/run` names
    // the checkout and its commit here, so another one runs it again.
    println!("cargo:rerun-if-env-changed=CALLISTO_CHECKOUT");
    let given = |var| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let (commit, date) = match given("CALLISTO_BUILD_COMMIT") {
        // A packager's commit with this checkout's date would mislead.
        Some(commit) => (Some(commit), given("CALLISTO_BUILD_DATE")),
        None => match Repo::find(workspace) {
            Some(repo) => {
                repo.watch();
                (
                    repo.git(&["rev-parse", "--short", "HEAD"]),
                    given("CALLISTO_BUILD_DATE")
                        .or_else(|| repo.git(&["log", "-1", "--format=%cs", "HEAD"])),
                )
            }
            None => (None, None),
        },
    };
    match (commit, date) {
        (Some(commit), Some(date)) => format!("{} {}", commit.trim(), date.trim()),
        (Some(commit), None) => commit.trim().to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

/// The git checkout whose top level is the workspace: not an enclosing
/// repository the sources happen to be unpacked in.
struct Repo {
    top: PathBuf,
}

impl Repo {
    fn find(workspace: &Path) -> Option<Repo> {
        let repo = Repo {
            top: workspace.to_owned(),
        };
        let top = repo.git(&["rev-parse", "--show-toplevel"])?;
        let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
        same(Path::new(&top), workspace).then_some(repo)
    }

    /// A git command's output, trimmed; `None` if it fails.
    fn git(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.top)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    }

    /// Watches `HEAD` and the branch it points to. A worktree keeps its own
    /// `HEAD`, and its branches in the common directory; a branch is a file
    /// there, or a line of `packed-refs` until the next commit writes the
    /// file (then its directory changes). Only paths that exist are named:
    /// cargo runs a build script again on every build while one is missing.
    fn watch(&self) {
        let path = |args: &[&str]| {
            let mut full = vec!["rev-parse", "--path-format=absolute"];
            full.extend_from_slice(args);
            self.git(&full).map(PathBuf::from)
        };
        let (Some(git_dir), Some(common)) = (path(&["--git-dir"]), path(&["--git-common-dir"]))
        else {
            return;
        };
        let mut watched = vec![git_dir.join("HEAD")];
        if let Some(branch) = self.git(&["symbolic-ref", "-q", "HEAD"]) {
            let loose = common.join(&branch);
            if loose.exists() {
                watched.push(loose);
            } else {
                watched.push(common.join("packed-refs"));
                watched.extend(loose.parent().map(Path::to_owned));
            }
        }
        for path in watched.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
