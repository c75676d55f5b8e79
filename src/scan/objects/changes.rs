//! Objects that changed or went away between their listing and their reading: every read is
//! pinned to the listed ETag, so such an object fails as ObjectChanged (or ObjectNotFound).
//! `Fail` (the default) fails the scan; `Skip` leaves the object out entirely (none of its
//! records count), up to a number of objects, and names the first few.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::scan::ScanError;

/// Most skipped objects a summary names.
pub const MAX_NAMED_FAILURES: usize = 10;

/// Longest message kept of a skipped object.
const MAX_MESSAGE: usize = 256;

/// What a scan does with an object that changed after it was listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnObjectChange {
    /// The scan fails.
    #[default]
    Fail,
    /// The object is left out, none of its records counted.
    Skip,
}

/// An object left out of a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObjectFailure {
    /// Its key.
    pub key: String,
    /// Why (ObjectChanged, ObjectNotFound).
    pub reason: String,
    /// The error, cut to 256 bytes.
    pub message: String,
}

/// The policy of a scan and the objects it skipped so far, shared by planning and the chunks.
#[derive(Clone, Debug, Default)]
pub struct ObjectChanges {
    policy: OnObjectChange,
    max_skipped: u64,
    skipped: Arc<Mutex<Skipped>>,
}

#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    first: Vec<ObjectFailure>,
}

impl ObjectChanges {
    /// `policy`, skipping at most `max_skipped` objects.
    pub fn new(policy: OnObjectChange, max_skipped: u64) -> ObjectChanges {
        ObjectChanges {
            policy,
            max_skipped,
            skipped: Arc::default(),
        }
    }

    /// Whether `error` of the object at `key` leaves it out of the scan (`Ok`), or fails the
    /// scan (`Err`: another error, the policy is Fail, or more objects would be skipped than
    /// allowed).
    pub fn skip(&self, key: &str, error: ScanError) -> Result<(), ScanError> {
        if !self.leaves_out(&error) {
            return Err(error);
        }
        let mut skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        if skipped.count >= self.max_skipped {
            return Err(ScanError::ObjectChanged(format!(
                "more than {} objects changed since they were listed; the last: {error}",
                self.max_skipped
            )));
        }
        skipped.count += 1;
        if skipped.first.len() < MAX_NAMED_FAILURES {
            let mut message = error.to_string();
            if message.len() > MAX_MESSAGE {
                let mut cut = MAX_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            skipped.first.push(ObjectFailure {
                key: key.to_string(),
                reason: error.reason().to_string(),
                message,
            });
        }
        Ok(())
    }

    /// Whether `error` is of an object changed or gone since it was listed, which the policy
    /// leaves out of the scan.
    pub fn leaves_out(&self, error: &ScanError) -> bool {
        self.policy == OnObjectChange::Skip
            && matches!(
                error,
                ScanError::ObjectChanged(_) | ScanError::ObjectNotFound(_)
            )
    }

    /// How many objects were skipped, and the first of them.
    pub fn skipped(&self) -> (u64, Vec<ObjectFailure>) {
        let skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        (skipped.count, skipped.first.clone())
    }

    /// The policy, skipping at most `max_skipped` objects.
    pub fn policy(&self) -> (OnObjectChange, u64) {
        (self.policy, self.max_skipped)
    }
}

/// Objects a chunk left out, as its report says: how many, and the first
/// [`MAX_NAMED_FAILURES`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedObjects {
    /// How many.
    pub count: u64,
    /// The first of them.
    #[serde(default)]
    pub first: Vec<ObjectFailure>,
}

impl SkippedObjects {
    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(key: &str) -> ScanError {
        ScanError::ObjectChanged(format!("s3://b/{key} {}", "x".repeat(300)))
    }

    #[test]
    fn changed_objects_are_skipped_up_to_the_bound_and_the_first_named() {
        let changes = ObjectChanges::new(OnObjectChange::Skip, 12);
        for i in 0..12 {
            changes.skip(&format!("k{i}"), changed("k")).unwrap();
        }
        let error = changes.skip("k12", changed("k12")).unwrap_err();
        assert!(
            error.to_string().contains("more than 12 objects"),
            "{error}"
        );
        let (count, first) = changes.skipped();
        assert_eq!(count, 12);
        assert_eq!(first.len(), MAX_NAMED_FAILURES);
        assert_eq!(
            (first[0].key.as_str(), first[0].reason.as_str()),
            ("k0", "ObjectChanged")
        );
        assert!(first[0].message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn other_errors_and_the_fail_policy_fail_the_scan() {
        let skip = ObjectChanges::new(OnObjectChange::Skip, 5);
        let denied = skip
            .skip("k", ScanError::AccessDenied("no".into()))
            .unwrap_err();
        assert_eq!(denied.reason(), "AccessDenied");
        skip.skip("gone", ScanError::ObjectNotFound("gone".into()))
            .unwrap();
        let fail = ObjectChanges::new(OnObjectChange::Fail, 5);
        assert_eq!(
            fail.skip("k", changed("k")).unwrap_err().reason(),
            "ObjectChanged"
        );
        assert_eq!(fail.skipped().0, 0);
    }
}
