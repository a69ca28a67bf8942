//! Compiles the built-in plugins in `plugins/` to WebAssembly components and
//! embeds them: `cargo build` of the gateway needs nothing else. Also names
//! the commit built, for `callisto --version`.

use std::fmt::Write;
use std::path::PathBuf;

#[path = "build/commit.rs"]
mod commit;
#[path = "build/guests.rs"]
mod guests;

/// Plugin name, and the crate under `plugins/` that implements it.
const BUILTINS: [(&str, &str); 9] = [
    ("default", "callisto-plugin-default"),
    ("europa", "callisto-plugin-europa"),
    ("slack", "callisto-plugin-slack"),
    ("cloudevents", "callisto-plugin-cloudevents"),
    ("discord", "callisto-plugin-discord"),
    ("teams", "callisto-plugin-teams"),
    ("github-dispatch", "callisto-plugin-github-dispatch"),
    ("flux", "callisto-plugin-flux"),
    ("template", "callisto-plugin-template"),
];

fn main() {
    let root = guests::workspace_root();
    println!(
        "cargo:rustc-env=CALLISTO_BUILD_INFO={}",
        commit::describe(&root)
    );
    for (name, _) in BUILTINS {
        guests::watch_crate(&root.join("plugins").join(name));
    }
    let crates: Vec<&str> = BUILTINS.iter().map(|(_, krate)| *krate).collect();
    let built = guests::build(&crates);

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let mut src = String::from(
        "/// Built-in plugins: name and component bytes.\n\
         pub const BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for ((name, _), wasm) in BUILTINS.iter().zip(built) {
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&wasm, &dest).expect("copy plugin component");
        writeln!(
            src,
            "    ({name:?}, include_bytes!({:?})),",
            dest.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), src).unwrap();
}
