//! The delivery status of a message and the rule that merges reports.

use serde::{Deserialize, Serialize};

/// A delivery status, declared in rank order:
/// `sent < unreported < failed < delivered < read`.
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
    /// Lowest: the sending side registered the message (or KooMessage said
    /// it was sent); any report says more.
    Sent,
    /// Still `sent` after `reports.unreported_after`: no report came. Below
    /// `failed` because it is not news about the message, only the absence
    /// of news: any report that arrives later, even `failed`, says more.
    Unreported,
    /// A later `delivered` or `read` proves the failure was not final.
    Failed,
    /// A `failed` after it cannot undo a delivery.
    Delivered,
    /// Highest: reading proves delivery.
    Read,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Sent,
        Status::Unreported,
        Status::Failed,
        Status::Delivered,
        Status::Read,
    ];

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "sent" => Some(Status::Sent),
            "unreported" => Some(Status::Unreported),
            "failed" => Some(Status::Failed),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Unreported => "unreported",
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

/// The status a report carries: one of the five ranked ones, or another
/// lowercase word (`^[a-z][a-z_]{0,31}$`) that KooMessage may send one day
/// (WhatsApp also knows `deleted` and `warning`). An unranked word is kept
/// in the history but never moves the current status (SPEC §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Ranked(Status),
    Other(String),
}

impl Reported {
    pub fn parse(s: &str) -> Option<Reported> {
        if let Some(status) = Status::parse(s) {
            return Some(Reported::Ranked(status));
        }
        let mut chars = s.chars();
        let word = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c == '_')
            && s.len() <= 32;
        word.then(|| Reported::Other(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reported::Ranked(status) => status.as_str(),
            Reported::Other(word) => word,
        }
    }

    pub fn ranked(&self) -> Option<Status> {
        match self {
            Reported::Ranked(status) => Some(*status),
            Reported::Other(_) => None,
        }
    }

    /// [`Status::merge`] for any report: an unranked word leaves the current
    /// status as it is, and a message first known from one is `sent`
    /// (KooMessage reports only on messages it sent). Returns the new
    /// current status and whether this report advanced it.
    pub fn merge(&self, current: Option<Status>) -> (Status, bool) {
        match self {
            Reported::Ranked(status) => Status::merge(current, *status),
            Reported::Other(_) => (current.unwrap_or(Status::Sent), false),
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
        assert!(Status::Sent < Status::Unreported);
        assert!(Status::Unreported < Status::Failed);
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
        assert_eq!(Status::parse("deleted"), None);
    }

    #[test]
    fn unranked_words_are_kept_and_move_nothing() {
        assert_eq!(
            Reported::parse("deleted"),
            Some(Reported::Other("deleted".into()))
        );
        assert_eq!(Reported::parse("a_b"), Some(Reported::Other("a_b".into())));
        assert_eq!(
            Reported::parse("read"),
            Some(Reported::Ranked(Status::Read))
        );
        for bad in ["Read!", "READ", "", "_x", "x1", "a b", &"a".repeat(33)] {
            assert_eq!(Reported::parse(bad), None, "{bad:?}");
        }
        assert!(Reported::parse(&"a".repeat(32)).is_some());
        let other = Reported::Other("deleted".into());
        assert_eq!(other.merge(None), (Status::Sent, false));
        assert_eq!(other.merge(Some(Status::Read)), (Status::Read, false));
    }
}
