//! The delivery status of a message and the rule that merges reports.

use serde::{Deserialize, Serialize};

/// A delivery status, declared in rank order: `failed < delivered < read`.
///
/// The PostgreSQL enum `message_status` is declared in the same order, so the
/// database compares statuses exactly as `Ord` does here.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "message_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Lowest: a later `delivered` or `read` proves the failure was not final.
    Failed,
    /// A `failed` after it cannot undo a delivery.
    Delivered,
    /// Highest: reading proves delivery.
    Read,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Failed, Status::Delivered, Status::Read];

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "failed" => Some(Status::Failed),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Failed => "failed",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }

    /// The status rule: the current status is the highest-ranked status ever
    /// accepted, so a report can only move it forward. Returns the new current
    /// status and whether `incoming` advanced it.
    ///
    /// `db::reports::record_reports` applies the same rule in one statement;
    /// the tests check the two against each other.
    pub fn merge(current: Option<Status>, incoming: Status) -> (Status, bool) {
        match current {
            Some(current) if current >= incoming => (current, false),
            _ => (incoming, true),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order() {
        assert!(Status::Failed < Status::Delivered);
        assert!(Status::Delivered < Status::Read);
    }

    #[test]
    fn merge_every_ordered_pair() {
        for a in Status::ALL {
            assert_eq!(Status::merge(None, a), (a, true));
            for b in Status::ALL {
                let (after_a, _) = Status::merge(None, a);
                let (after_b, advanced) = Status::merge(Some(after_a), b);
                assert_eq!(after_b, a.max(b));
                assert_eq!(advanced, b > a, "{a} then {b}");
            }
        }
    }

    #[test]
    fn parse_round_trips_and_is_exact() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("READ"), None);
        assert_eq!(Status::parse("sent"), None);
    }
}
