//! Object handles found by label, kept so that an operation on a key does
//! not search the whole token for it: `C_FindObjects` costs time in
//! proportion to the objects on the token (SoftHSM2: 35 ms a rotation on a
//! fresh token, 131 ms with ~1,000 objects), and keyhold looks up a key's
//! material, the seal key or the audit MAC key in nearly every call. The
//! same record tells key generation which labels keyhold met before.
//!
//! Rules:
//! - a handle is used again only after one `C_GetAttributeValue` shows it
//!   still names an object with the label (and class) it was found under:
//!   handles of destroyed objects may be given to new ones, and a handle
//!   that named another key's material would wrap the wrong key;
//! - a handle that fails that check, or that the token calls invalid, is
//!   not used again and the object is searched for again;
//! - handles belong to one module generation: after a re-initialisation
//!   (a token pulled out and back) every one is searched for again;
//! - PKCS#11 makes a token object's handle valid in every session of the
//!   application, so one cache serves the whole session pool;
//! - a label stays known ([`HandleCache::knows`]) while its handle is
//!   unusable, and from just before a `C_GenerateKey` for it until its
//!   handle is known: generating for a known label searches the token
//!   first, so an answer lost on the way back (a retry on a fresh session,
//!   a later call) never leaves two objects under one label. Only deleting
//!   the label's objects ([`HandleCache::forget`]) makes it unknown again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::session::Ctx;

/// What is known of one label.
#[derive(Clone, Copy, Debug)]
enum Known {
    /// Found or made under this handle, in this module generation.
    At {
        generation: u64,
        handle: ObjectHandle,
    },
    /// Met before, but without a usable handle: a generation whose answer
    /// did not come back, or a handle that failed its check.
    Unsure,
}

/// Handles of keyhold's objects by label, for one token.
#[derive(Debug, Default)]
pub(super) struct HandleCache {
    known: Mutex<HashMap<Vec<u8>, Known>>,
}

impl HandleCache {
    /// The handle found for `label` before, when it still names an object of
    /// `class` with that label in this module generation.
    pub(super) fn get(
        &self,
        c: &Ctx<'_>,
        label: &[u8],
        class: ObjectClass,
    ) -> Option<ObjectHandle> {
        let Known::At { generation, handle } = *self.lock().get(label)? else {
            return None;
        };
        let still_it = generation == c.generation
            && c.session
                .get_attributes(handle, &[AttributeType::Label, AttributeType::Class])
                .is_ok_and(|attributes| {
                    let labelled = attributes
                        .iter()
                        .any(|a| matches!(a, Attribute::Label(l) if l.as_slice() == label));
                    let classed = attributes
                        .iter()
                        .any(|a| matches!(a, Attribute::Class(k) if *k == class));
                    labelled && classed
                });
        if still_it {
            Some(handle)
        } else {
            self.distrust(label);
            None
        }
    }

    pub(super) fn put(&self, c: &Ctx<'_>, label: Vec<u8>, handle: ObjectHandle) {
        self.lock().insert(
            label,
            Known::At {
                generation: c.generation,
                handle,
            },
        );
    }

    /// Whether keyhold met `label` before (with or without a usable handle).
    pub(super) fn knows(&self, label: &[u8]) -> bool {
        self.lock().contains_key(label)
    }

    /// Keeps `label` known without a handle: its handle is not to be used
    /// (the token called it invalid), or a `C_GenerateKey` for it is about
    /// to be sent.
    pub(super) fn distrust(&self, label: &[u8]) {
        self.lock().insert(label.to_vec(), Known::Unsure);
    }

    /// Forgets `label` altogether: its objects were destroyed.
    pub(super) fn forget(&self, label: &[u8]) {
        self.lock().remove(label);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
