//! Compiled plugins on disk, so that a restart loads each plugin in a
//! fraction of a millisecond instead of compiling it again (~100 ms each).
//!
//! An artifact is keyed by the component's SHA-256 and the engine's
//! compatibility hash (wasmtime version and every setting that affects
//! code generation): a file that does not match is never loaded, and one
//! that fails to load is recompiled and replaced.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::LoadError;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    compat: String,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Result<Self, LoadError> {
        std::fs::create_dir_all(&dir).map_err(|source| LoadError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            compat: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// The compiled component for `wasm`, from the cache or compiled now
    /// (and then stored; a cache that cannot be written only costs time).
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Component, LoadError> {
        let path = self.path(sha256);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "discarding a compiled plugin that does not load: {e:#}"
                ),
            }
        }
        let component = compile(engine, wasm)?;
        if let Err(e) = component
            .serialize()
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes))
        {
            tracing::warn!(path = %path.display(), "cannot cache a compiled plugin: {e}");
            return Ok(component);
        }
        // The code just compiled sits in anonymous memory, all of it
        // resident (some 20 MiB for the built-ins); mapped from the file
        // it was written to, only the pages that run are, and the kernel
        // may drop them. So a first start is as small as a restart.
        Ok(deserialize(engine, &path).unwrap_or(component))
    }
}

pub(crate) fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component, LoadError> {
    if !wasmparser_is_component(wasm) {
        return Err(LoadError::NotAComponent {
            reason: if wasm.starts_with(b"\0asm") {
                "this is a core WebAssembly module; build for wasm32-wasip2 (or run `wasm-tools component new`)".into()
            } else {
                "missing the \\0asm header".into()
            },
        });
    }
    Component::new(engine, wasm).map_err(|e| LoadError::NotAComponent {
        reason: format!("{e:#}"),
    })
}

/// A component's preamble: magic, then layer 1 (a core module is layer 0).
fn wasmparser_is_component(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[6..8] == [1, 0]
}

/// The one `unsafe` call of plugin loading. Loading a compiled artifact runs its
/// machine code, so wasmtime cannot check it as it checks wasm: it must be
/// a file this process (or an earlier one with the same engine) wrote. The
/// cache lives in the data directory, which only the gateway writes, and the
/// file name binds it to the exact wasm and engine settings.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see above; wasmtime also checks the artifact's header against
    // this engine's version and configuration and refuses a mismatch.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes through a temporary file and a rename, so that a crash never
/// leaves a half-written file under the final name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}
