//! keyhold's core: the domain of key groups, keys, identities and the audit
//! chain, the operations on them, and the ports (traits) adapters implement.
//!
//! Nothing here performs I/O: no sockets, files, SQL or SDK calls. Time comes
//! from a [`clock::Clock`], persistence from a [`ports::Store`], key material
//! from a [`ports::Keystore`], the cloud KMS from a [`cloud::CloudKms`].

#[macro_use]
mod newtype;

pub mod action;
pub mod approval;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod cloud;
pub mod cluster;
pub mod credential;
pub mod drift;
pub mod error;
pub mod group;
pub mod id;
pub mod identity;
pub mod interval;
pub mod job;
pub mod key;
pub mod names;
pub mod ports;
pub mod schedule;
pub mod service;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod xks;

pub use error::{CoreError, CoreResult, InvalidInput, KeystoreError, StoreError, WriteRefusal};
