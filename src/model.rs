//! The JSON shapes of messages, their history and feed pages that the read
//! API answers with and the export writes, separate from the database rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::messages::{HistoryRow, MessageRow};
use crate::domain::Status;
use crate::live::ChangeEntry;

// A deliberate mirror of db::messages::MessageRow: this is the API's
// contract, that is the table's shape; either may change without the other.
/// A message without its history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = message_example)]
pub struct Message {
    pub channel_id: String,
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub status: Status,
    pub first_seen_at: DateTime<Utc>,
    /// When the current status last moved forward.
    pub updated_at: DateTime<Utc>,
    /// When the sending side sent it (registration); null when it was
    /// never registered.
    pub sent_at: Option<DateTime<Utc>>,
    /// The registration's tags, `[]` when none.
    pub tags: Vec<String>,
}

/// A message with its history, oldest entry first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = detail_example)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    pub history: Vec<HistoryEntry>,
}

/// What became of one status of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// One of the five statuses, or another lowercase word KooMessage
    /// reported (kept with `advanced: false`).
    #[schema(pattern = "^[a-z][a-z_]{0,31}$", example = "delivered")]
    pub status: String,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
    pub receipt_count: i64,
    /// Whether this status moved the current status forward when it first arrived.
    pub advanced: bool,
    /// Fields of the first report of this status beyond the four of the interface.
    #[schema(value_type = Object)]
    pub extra: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"message_ids": ["044852ee407b40ec88ea65adb73ff5c27", "unknown-id"]}))]
pub struct LookupRequest {
    /// 1 to 1000 message ids; duplicates are allowed.
    #[schema(schema_with = message_ids)]
    pub message_ids: Vec<String>,
}

/// What the lookup accepts (messages.rs checks it): 1 to 1000 ids of 1 to
/// 128 characters without NUL.
fn message_ids() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some("^[^\\u0000]+$"));
    ArrayBuilder::new()
        .items(id)
        .min_items(Some(1))
        .max_items(Some(1000))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"messages": [message_example()], "missing": ["unknown-id"]}))]
pub struct LookupResponse {
    /// Found messages, in the order of their first mention in the request.
    pub messages: Vec<Message>,
    /// Requested ids that are not known, in request order, each once.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "messages": [message_example()],
    "next_cursor": "MTc2Mzg5MjYwMDUwMDAwMDowNDQ4NTJlZTQwN2I0MGVj"
}))]
pub struct MessagePage {
    /// Newest change first.
    pub messages: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The documents' example message, in every example that shows one.
fn message_example() -> serde_json::Value {
    serde_json::json!({
        "channel_id": "202105102694809992",
        "message_id": "044852ee407b40ec88ea65adb73ff5c27",
        "sender": "86173xxxx4526",
        "user_number": "86187xxxx5632",
        "status": "read",
        "first_seen_at": "2026-11-23T10:15:02.125Z",
        "updated_at": "2026-11-23T10:16:40.5Z",
        "sent_at": null,
        "tags": []
    })
}

fn detail_example() -> serde_json::Value {
    let mut detail = message_example();
    detail["history"] = serde_json::json!([
        {"status": "delivered", "first_received_at": "2026-11-23T10:15:02.125Z",
         "last_received_at": "2026-11-23T10:15:09.25Z", "receipt_count": 2, "advanced": true,
         "extra": {}},
        {"status": "read", "first_received_at": "2026-11-23T10:16:40.5Z",
         "last_received_at": "2026-11-23T10:16:40.5Z", "receipt_count": 1, "advanced": true,
         "extra": {"timestamp": "1700734600"}}
    ]);
    detail
}

impl From<MessageRow> for Message {
    fn from(m: MessageRow) -> Message {
        Message {
            channel_id: m.channel_id,
            message_id: m.message_id,
            sender: m.sender,
            user_number: m.user_number,
            status: m.status,
            first_seen_at: m.first_seen_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
            tags: m.tags,
        }
    }
}

impl From<HistoryRow> for HistoryEntry {
    fn from(h: HistoryRow) -> HistoryEntry {
        HistoryEntry {
            status: h.status,
            first_received_at: h.first_received_at,
            last_received_at: h.last_received_at,
            receipt_count: h.receipt_count,
            advanced: h.advanced,
            extra: h.extra,
        }
    }
}

impl MessageDetail {
    pub fn new(m: MessageRow, history: Vec<HistoryRow>) -> MessageDetail {
        MessageDetail {
            message: m.into(),
            history: history.into_iter().map(Into::into).collect(),
        }
    }
}

/// A page of the changes feed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "changes": [{
        "position": "48213-1077",
        "message_id": "044852ee407b40ec88ea65adb73ff5c27",
        "user_number": "86187xxxx5632",
        "status": "read",
        "changed_at": "2026-11-23T10:16:40.5Z"
    }],
    "next": "48213-1077"
}))]
pub struct ChangePage {
    pub changes: Vec<ChangeEntry>,
    /// Ask with `after` set to this next; the same position when nothing was new.
    pub next: String,
}
