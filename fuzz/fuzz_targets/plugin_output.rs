#![no_main]
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Reply {
    content_type: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    scheme: u8,
}

fuzz_target!(|r: Reply| callisto::fuzzing::plugin_output(r.content_type, r.headers, r.body, r.scheme));
