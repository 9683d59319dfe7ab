//! Exporting a channel's messages (SPEC §15): CSV or NDJSON, read from the
//! database a page at a time and encoded page by page, for the HTTP export
//! and `koostatus export` alike.

use std::collections::HashMap;

use actix_web::web::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::api::model::Message;
use crate::db::messages::{self, Keyset, ListFilter, MessageRow};
use crate::domain::Status;

/// Rows read per statement.
pub const PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// The CSV's columns: the message's fields, then when it first reached
/// each status (empty when it never did).
const COLUMNS: [&str; 14] = [
    "channel_id",
    "message_id",
    "sender",
    "user_number",
    "status",
    "first_seen_at",
    "updated_at",
    "sent_at",
    "tags",
    "sent",
    "unreported",
    "failed",
    "delivered",
    "read",
];

/// Reads the export a page at a time on the main runtime and sends each
/// page encoded; stops at the end, at an error, or when the client is gone.
/// `filter.limit` is the page size; `filter.after` where to start.
pub async fn produce(
    pool: PgPool,
    channel: String,
    mut filter: ListFilter,
    format: Format,
    pages: mpsc::Sender<Result<Bytes, sqlx::Error>>,
) {
    let mut first = true;
    loop {
        let page = async {
            let rows = messages::list(&pool, &channel, &filter).await?;
            let ids: Vec<String> = rows.iter().map(|r| r.message_id.clone()).collect();
            let times = messages::status_times(&pool, &channel, &ids).await?;
            Ok::<_, sqlx::Error>((rows, times))
        }
        .await;
        let (rows, times) = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "an export stopped: the database failed");
                let _ = pages.send(Err(e)).await;
                return;
            }
        };
        let full = rows.len() as i64 == filter.limit;
        filter.after = rows.last().map(|r| Keyset {
            updated_at: r.updated_at,
            message_id: r.message_id.clone(),
        });
        let bytes = encode(format, first, rows, times);
        first = false;
        if pages.send(Ok(bytes)).await.is_err() || !full {
            return;
        }
    }
}

/// A page as CSV (with the header row first) or NDJSON.
pub fn encode(
    format: Format,
    with_header: bool,
    rows: Vec<MessageRow>,
    times: Vec<(String, String, DateTime<Utc>)>,
) -> Bytes {
    let mut reached: HashMap<String, HashMap<String, DateTime<Utc>>> = HashMap::new();
    for (id, status, at) in times {
        reached.entry(id).or_default().insert(status, at);
    }
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    match format {
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 200));
            if with_header {
                out.write_record(COLUMNS).expect("writing to memory");
            }
            for m in rows {
                let at = reached.remove(&m.message_id).unwrap_or_default();
                let mut record = vec![
                    m.channel_id,
                    m.message_id,
                    m.sender,
                    m.user_number,
                    m.status.to_string(),
                    time(&m.first_seen_at),
                    time(&m.updated_at),
                    m.sent_at.as_ref().map(time).unwrap_or_default(),
                    serde_json::to_string(&m.tags).expect("strings serialize"),
                ];
                record
                    .extend(Status::ALL.map(|s| at.get(s.as_str()).map(time).unwrap_or_default()));
                out.write_record(record.iter().map(|cell| inert(cell).into_owned()))
                    .expect("writing to memory");
            }
            Bytes::from(out.into_inner().expect("writing to memory"))
        }
        Format::Ndjson => {
            let mut out = Vec::with_capacity(rows.len() * 300);
            for m in rows {
                let at = reached.remove(&m.message_id).unwrap_or_default();
                let mut line = serde_json::to_value(Message::from(m)).expect("serializes");
                line["reached"] = Status::ALL
                    .iter()
                    .filter_map(|s| Some((s.as_str().to_owned(), time(at.get(s.as_str())?).into())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                serde_json::to_writer(&mut out, &line).expect("writing to memory");
                out.push(b'\n');
            }
            Bytes::from(out)
        }
    }
}

/// OWASP's advice against CSV injection: a cell that a spreadsheet would
/// read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return) gets a leading `'`, so it is shown as text. User numbers and
/// message ids come from outside.
fn inert(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn formulas_are_made_inert_and_the_rest_kept() {
        for bad in ["=1+1", "+86", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(inert(bad), format!("'{bad}"));
        }
        for good in ["86187", "a=b", "", "'quoted"] {
            assert_eq!(inert(good), good);
        }
    }
}
