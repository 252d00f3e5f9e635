//! The AWS KMS External Key Store (XKS) proxy API, version 1, as keyhold
//! serves it. No I/O: the server's `xks` module reads requests off the
//! network and calls these.
//!
//! - [`route()`]: which operation a path names, under which store prefix;
//! - [`sigv4`]: the request's signature;
//! - [`decode`]: the body, checked, into typed input;
//! - [`wire`]: the JSON of every request and answer;
//! - [`cdiv()`]: the ciphertext data integrity value of an Encrypt answer;
//! - [`XksError`]: every refusal, with its status, name and body.

pub mod cdiv;
pub mod decode;
pub mod error;
pub mod route;
pub mod sigv4;
pub mod wire;

pub use cdiv::cdiv;
pub use decode::{
    DecryptInput, EncryptInput, parse_decrypt, parse_encrypt, parse_health, parse_key_metadata,
};
pub use error::XksError;
pub use route::{Route, route};
