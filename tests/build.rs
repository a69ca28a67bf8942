//! Builds the guests the end-to-end tests run in the sandbox: a plugin that
//! misbehaves on request and a component of another world.

use std::fmt::Write;

#[path = "../gateway/build/guests.rs"]
mod guests;

const GUESTS: [(&str, &str, &str); 3] = [
    ("HOSTILE", "callisto-guest-hostile", "guests/hostile"),
    (
        "WRONG_WORLD",
        "callisto-guest-wrong-world",
        "guests/wrong-world",
    ),
    // The plugin `plugin-sdk/README.md` walks through, kept verbatim.
    ("DISCORD", "discord-plugin", "guests/discord"),
];

fn main() {
    let root = guests::workspace_root();
    for (_, _, dir) in GUESTS {
        guests::watch_crate(&root.join("tests").join(dir));
    }
    let crates: Vec<&str> = GUESTS.iter().map(|(_, krate, _)| *krate).collect();
    let built = guests::build(&crates);
    let mut src = String::new();
    for ((constant, krate, _), path) in GUESTS.iter().zip(built) {
        writeln!(
            src,
            "/// The `{krate}` component.\npub const {constant}: &[u8] = include_bytes!({:?});\n\
             /// Where the `{krate}` component was built.\npub const {constant}_PATH: &str = {:?};",
            path.display().to_string(),
            path.display().to_string()
        )
        .unwrap();
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(out.join("guests.rs"), src).unwrap();
}
