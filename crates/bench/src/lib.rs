//! keyhold-bench as a library: what other crates' tests start in-process.
//!
//! Today that is the AWS KMS peer ([`kms_peer`]): the benchmarks use it to
//! measure keyhold alone or under AWS's request quotas, and keyhold-aws's
//! tests use its faithful mode where LocalStack does not do what AWS KMS
//! documents for in-place rotation of imported key material. Beside it, the
//! SigV4-signing client of keyhold's XKS proxy ([`xks_client`]), which the
//! XKS benchmark and the CLI crate's XKS cluster test both drive it with.

pub mod kms_peer;
pub mod xks_client;
