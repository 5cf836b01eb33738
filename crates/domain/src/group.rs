//! Failure groups: failures sharing an [`ErrorSignature`], with when and how widely they occur.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{ErrorPattern, ErrorSignature, PageSize, TaskId, Timestamp, ValidationError};

/// One group of stored failures with the same signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// Category, error code and normalised message the members share (and the signature).
    pub pattern: ErrorPattern,
    /// How many stored failures have this signature.
    pub count: u64,
    /// The oldest member's fail time.
    pub first_seen: Timestamp,
    /// The newest member's fail time.
    pub last_seen: Timestamp,
    /// How many distinct clients the members ran for.
    pub clients_affected: u64,
    /// The newest member, to look at one example.
    pub sample_task_id: TaskId,
}

/// Where the next page of groups starts: after the group last seen at `last_seen` with
/// `signature` (groups are listed by last seen, newest first, then signature descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCursor {
    last_seen: Timestamp,
    signature: ErrorSignature,
}

impl GroupCursor {
    /// A cursor after `group`.
    pub fn after(group: &FailureGroup) -> Self {
        Self {
            last_seen: group.last_seen,
            signature: group.pattern.signature().clone(),
        }
    }

    /// The last seen time of the previous page's last group.
    pub fn last_seen(&self) -> Timestamp {
        self.last_seen
    }

    /// The signature of the previous page's last group.
    pub fn signature(&self) -> &ErrorSignature {
        &self.signature
    }

    /// Whether a group at (`last_seen`, `signature`) comes after this cursor.
    pub fn is_before(&self, last_seen: Timestamp, signature: &ErrorSignature) -> bool {
        (last_seen, signature) < (self.last_seen, &self.signature)
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "g1:{}:{}",
            self.last_seen.unix_millis(),
            self.signature
        ))
    }

    /// Decode a cursor a client sent back; errors name `cursor`.
    pub fn decode(text: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor", "is not a group cursor this service issued");
        if text.is_empty() || text.len() > 128 {
            return Err(bad());
        }
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        let rest = raw.strip_prefix("g1:").ok_or_else(bad)?;
        let (ms, sig) = rest.split_once(':').ok_or_else(bad)?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let ms: i64 = ms.parse().map_err(|_| bad())?;
        Ok(Self {
            last_seen: Timestamp::from_unix_millis(ms).map_err(|_| bad())?,
            signature: ErrorSignature::parse(sig).map_err(|_| bad())?,
        })
    }
}

/// One request for a page of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupQuery {
    /// Groups per page.
    pub page_size: PageSize,
    /// Where to start; `None` for the first page.
    pub cursor: Option<GroupCursor>,
}

/// One page of groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPage {
    /// How many groups there are (all pages).
    pub total: u64,
    /// This page: last seen newest first.
    pub groups: Vec<FailureGroup>,
    /// Where the next page starts, or `None` on the last page.
    pub next_cursor: Option<GroupCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCategory;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let sig = ErrorSignature::of(ErrorCategory::DataError, "E", "m");
        let c = GroupCursor {
            last_seen: Timestamp::from_unix_millis(1_737_709_200_000).unwrap(),
            signature: sig,
        };
        assert_eq!(GroupCursor::decode(&c.encode()), Ok(c));
        for bad in ["", "x", "ZzE6MTox", "djE6MTp4"] {
            assert_eq!(GroupCursor::decode(bad).unwrap_err().field, "cursor");
        }
    }
}
