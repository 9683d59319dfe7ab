//! Exporting a channel's messages (SPEC §15): CSV or NDJSON, read from the
//! database a page at a time and encoded page by page, for the HTTP export
//! and `koostatus export` alike.

use std::fmt::Write as _;

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::db::messages::{self, ExportRow, Keyset, ListFilter, MessageRow};
use crate::model::Message;

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

/// The CSV's columns (SPEC §15): the message's fields, when it was first
/// reported failed, delivered and read (empty when never), its tags.
const COLUMNS: [&str; 12] = [
    "channel_id",
    "message_id",
    "sender",
    "user_number",
    "status",
    "first_seen_at",
    "updated_at",
    "sent_at",
    "failed_at",
    "delivered_at",
    "read_at",
    "tags",
];

/// Exports at once per instance: each holds a database connection (its
/// snapshot) for as long as its client reads, and the pool serves the
/// callbacks too.
pub const MAX_CONCURRENT: usize = 2;

/// While callbacks come in, an export rests this many times as long as its
/// last page took: it then takes about a tenth of what it would alone, and
/// the callbacks keep the machine. Alone it runs at full speed.
const REST_WHILE_BUSY: u32 = 9;

/// How long an export may wait on its client before its snapshot ends
/// (and the download with it).
pub const CLIENT_STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// A page as read from the database; whoever receives it encodes it (the
/// HTTP body on its worker thread, the command on its own), so that
/// encoding one page overlaps reading the next on the main runtime.
pub struct Page {
    pub rows: Vec<ExportRow>,
    /// The export's first page, which the CSV's header row precedes.
    pub first: bool,
}

/// Reads the export a page at a time on the main runtime and sends each
/// page; stops at the end, at an error, or when the client is gone.
/// `filter.limit` is the page size; `filter.after` where to start.
///
/// Every page is read in one read-only snapshot: keyset pages over
/// `updated_at` in separate snapshots would miss each message that changed
/// during the export (it moves above the pages still to read).
///
/// `urgent`, when given, is a count that grows while more urgent work
/// arrives (reports written): the export rests while it grows.
pub async fn produce(
    pool: PgPool,
    channel: String,
    mut filter: ListFilter,
    pages: mpsc::Sender<Result<Page, sqlx::Error>>,
    urgent: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
) {
    let mut snapshot = match messages::snapshot(&pool, CLIENT_STALL).await {
        Ok(tx) => tx,
        Err(e) => {
            let _ = pages.send(Err(e)).await;
            return;
        }
    };
    let mut first = true;
    let mut urgent_seen = urgent.as_ref().map_or(0, |count| count());
    loop {
        let started = std::time::Instant::now();
        let rows = match messages::export_page(&mut *snapshot, &channel, &filter).await {
            Ok(rows) => rows,
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
        let page = Page { rows, first };
        first = false;
        if pages.send(Ok(page)).await.is_err() || !full {
            // Read-only: dropping the snapshot rolls it back, nothing lost.
            return;
        }
        if let Some(count) = &urgent {
            let now = count();
            if now != urgent_seen {
                urgent_seen = now;
                tokio::time::sleep(started.elapsed() * REST_WHILE_BUSY).await;
            }
        }
    }
}

/// Encodes export pages on a thread of its own at the lowest CPU priority
/// (nice 19): encoding is most of an export's CPU, and on a busy machine
/// an export takes what the callbacks leave instead of halving them. When
/// the encoder is starved the pages wait, the producer waits on them, and
/// the export's database session idles too. On an idle machine it runs at
/// full speed.
#[derive(Clone)]
pub struct Encoder {
    jobs: std::sync::mpsc::Sender<(Format, Page, tokio::sync::oneshot::Sender<Bytes>)>,
}

impl Encoder {
    pub fn start() -> Encoder {
        let (jobs, received) =
            std::sync::mpsc::channel::<(Format, Page, tokio::sync::oneshot::Sender<Bytes>)>();
        std::thread::Builder::new()
            .name("export-encoder".into())
            .spawn(move || {
                lowest_priority();
                // Ends when the last Encoder is dropped.
                for (format, page, done) in received {
                    let _ = done.send(encode(format, page));
                }
            })
            .expect("a thread starts");
        Encoder { jobs }
    }

    pub async fn encode(&self, format: Format, page: Page) -> Bytes {
        let (done, bytes) = tokio::sync::oneshot::channel();
        self.jobs
            .send((format, page, done))
            .expect("the encoder thread runs while an Encoder exists");
        bytes.await.expect("the encoder thread answers every job")
    }
}

/// Nice 19 for the calling thread (on Linux the nice value is per thread).
fn lowest_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id
    // only lowers this thread's priority, which needs no privilege.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19)
    };
    if result != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "the export encoder keeps the normal CPU priority"
        );
    }
}

/// A message of the NDJSON export: the read API's message (without
/// history) and the three report times.
#[derive(serde::Serialize)]
struct NdjsonLine {
    #[serde(flatten)]
    message: Message,
    failed_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
}

/// A page as CSV (with the header row first) or NDJSON.
pub fn encode(format: Format, page: Page) -> Bytes {
    match format {
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::with_capacity(page.rows.len() * 200));
            if page.first {
                out.write_record(COLUMNS).expect("writing to memory");
            }
            let mut time = String::with_capacity(32);
            let mut field = |out: &mut csv::Writer<Vec<u8>>, t: Option<&DateTime<Utc>>| {
                time.clear();
                if let Some(t) = t {
                    write!(time, "{}", t.format("%Y-%m-%dT%H:%M:%S%.fZ")).expect("to a string");
                }
                out.write_field(&time).expect("writing to memory");
            };
            for m in page.rows {
                for text in [&m.channel_id, &m.message_id, &m.sender, &m.user_number] {
                    out.write_field(inert(text).as_bytes())
                        .expect("writing to memory");
                }
                out.write_field(m.status.as_str())
                    .expect("writing to memory");
                field(&mut out, Some(&m.first_seen_at));
                field(&mut out, Some(&m.updated_at));
                for t in [
                    m.sent_at,
                    m.first_failed_at,
                    m.first_delivered_at,
                    m.first_read_at,
                ] {
                    field(&mut out, t.as_ref());
                }
                out.write_field(inert(&m.tags.join(";")).as_bytes())
                    .expect("writing to memory");
                out.write_record(None::<&[u8]>).expect("writing to memory");
            }
            Bytes::from(out.into_inner().expect("writing to memory"))
        }
        Format::Ndjson => {
            let mut out = Vec::with_capacity(page.rows.len() * 300);
            for m in page.rows {
                let line = NdjsonLine {
                    failed_at: m.first_failed_at,
                    delivered_at: m.first_delivered_at,
                    read_at: m.first_read_at,
                    message: Message::from(MessageRow {
                        channel_id: m.channel_id,
                        message_id: m.message_id,
                        sender: m.sender,
                        user_number: m.user_number,
                        status: m.status,
                        first_seen_at: m.first_seen_at,
                        updated_at: m.updated_at,
                        sent_at: m.sent_at,
                        tags: m.tags,
                    }),
                };
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
