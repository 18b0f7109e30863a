//! Recognising a response body the exporter has already digested.
//!
//! A finished sandbox task answers every poll with the same body. Hashing it (≈ 1 µs per KiB)
//! and comparing with the previous poll's hash lets a poll skip decoding and recounting. The
//! hash is SipHash with a key drawn at start-up, so a body chosen by malware cannot be made to
//! collide with an earlier one and hide a change.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use super::decode::Decoded;
use super::Download;

/// A keyed 64-bit hash of a response body, comparable only within one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDigest(u64);

impl BodyDigest {
    pub fn of(body: &[u8]) -> BodyDigest {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        BodyDigest(KEY.get_or_init(RandomState::new).hash_one(body))
    }
}

/// What a successful attempt yielded.
#[derive(Debug)]
pub enum Downloads {
    /// A body different from the one the caller already had, decoded. The digest is `None`
    /// for records that did not come from a body (tests, benchmarks).
    Changed {
        decoded: Decoded,
        digest: Option<BodyDigest>,
    },
    /// Byte for byte the body the caller already had: not decoded again.
    Unchanged(BodyDigest),
}

impl Downloads {
    /// The number of records, when they were decoded.
    pub fn files(&self) -> Option<usize> {
        match self {
            Downloads::Changed { decoded, .. } => Some(decoded.files.len()),
            Downloads::Unchanged(_) => None,
        }
    }
}

impl From<Vec<Download>> for Downloads {
    fn from(files: Vec<Download>) -> Self {
        Downloads::Changed {
            decoded: Decoded {
                files,
                report: Default::default(),
            },
            digest: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bodies_have_equal_digests_and_a_changed_byte_changes_it() {
        let body = br#"[{"Zone":"Red","Sha256":"aa"}]"#;
        let copy = body.to_vec();
        assert_eq!(BodyDigest::of(body), BodyDigest::of(copy.as_slice()));
        assert_ne!(
            BodyDigest::of(body),
            BodyDigest::of(br#"[{"Zone":"Red","Sha256":"ab"}]"#)
        );
        assert_ne!(BodyDigest::of(b""), BodyDigest::of(b"[]"));
    }
}
