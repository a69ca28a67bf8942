#![no_main]
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    toml: String,
    env: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    // Only CALLISTO_* variables are read; steer most of them there.
    let env = input
        .env
        .into_iter()
        .map(|(k, v)| if k.starts_with("CALLISTO_") { (k, v) } else { (format!("CALLISTO_{}", k.to_uppercase()), v) })
        .collect();
    callisto::fuzzing::config(&input.toml, env)
});
