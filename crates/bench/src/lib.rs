//! keyhold-bench as a library: what other crates' tests start in-process.
//!
//! Today that is the AWS KMS peer ([`kms_peer`]): the benchmarks use it to
//! measure keyhold alone or under AWS's request quotas, and keyhold-aws's
//! tests use its faithful mode where LocalStack does not do what AWS KMS
//! documents for in-place rotation of imported key material.

pub mod kms_peer;
