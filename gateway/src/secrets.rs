//! Secret material: random bytes from the operating system, the tokens and
//! webhook secrets made from them, and the private files they are kept in.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Cryptographically random bytes from the operating system. A system
/// without a random source cannot run a gateway safely: that panics.
/// Whether a credential someone gave is the expected one, in time that
/// does not depend on where they first differ: every token, signature and
/// CSRF check goes through here.
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source is readable");
}

/// A new Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// A random bearer token: 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes a file only its owner can read, created that way (no window in
/// which it is world-readable), and never over an existing file.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_decodable() {
        let a = generate_webhook_secret();
        assert_ne!(a, generate_webhook_secret());
        let key = STANDARD.decode(a.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(random_token(), random_token());
    }
}
