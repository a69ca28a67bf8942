//! Sending deliveries: signing, the HTTP client, retries and the record of
//! every attempt.

pub mod signature;
