//! Object handles found by label, kept so that an operation on a key does
//! not search the whole token for it: `C_FindObjects` costs time in
//! proportion to the objects on the token (SoftHSM2: 35 ms a rotation on a
//! fresh token, 131 ms with ~1,000 objects), and keyhold looks up a key's
//! material, the seal key or the audit MAC key in nearly every call.
//!
//! Rules:
//! - a handle is used again only after one `C_GetAttributeValue` shows it
//!   still names an object with the label (and class) it was found under:
//!   handles of destroyed objects may be given to new ones, and a handle
//!   that named another key's material would wrap the wrong key;
//! - a handle that fails that check, or that the token calls invalid, is
//!   forgotten and the object searched for again;
//! - handles belong to one module generation: after a re-initialisation
//!   (a token pulled out and back) every one is searched for again;
//! - PKCS#11 makes a token object's handle valid in every session of the
//!   application, so one cache serves the whole session pool.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::session::Ctx;

/// Handles of keyhold's objects by label, for one token.
#[derive(Debug, Default)]
pub(super) struct HandleCache {
    known: Mutex<HashMap<Vec<u8>, (u64, ObjectHandle)>>,
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
        let (generation, handle) = *self.lock().get(label)?;
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
            self.forget(label);
            None
        }
    }

    pub(super) fn put(&self, c: &Ctx<'_>, label: Vec<u8>, handle: ObjectHandle) {
        self.lock().insert(label, (c.generation, handle));
    }

    pub(super) fn forget(&self, label: &[u8]) {
        self.lock().remove(label);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (u64, ObjectHandle)>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
