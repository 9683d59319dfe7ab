//! `GET /api/v1/channels/{channel_id}/export`: a channel's messages as a
//! download for supervisors (SPEC §15), CSV or NDJSON, streamed from the
//! database a page at a time: never the whole result in memory.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;

use super::Readable;
use super::model::Message;
use super::params::{ExportFormat, ExportParams, ExportQuery, parse_export_params};
use crate::db::messages::{self, Keyset, MessageRow};
use crate::domain::{ChannelId, Status};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

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

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/export",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ExportParams),
    responses(
        (status = 200, description = "The messages the listing's filters select, newest change first, as an attachment: CSV (RFC 4180, a header row, the message's fields and when it first reached each status; a cell starting with = + - @ tab or CR is prefixed with ') or NDJSON (one message per line with `reached`, the same times)", content(
            (String = "text/csv"),
            (String = "application/x-ndjson")
        )),
        (status = 400, description = "A bad format, status, time or filter", body = ErrorBody),
        super::ChannelRefusals,
        (status = 503, description = "Database unavailable; retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub async fn export(
    Readable(channel): Readable,
    params: web::Query<ExportParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = parse_export_params(params.into_inner())?;
    let name = file_name(&channel, &query);
    let format = query.format;
    // Two pages in flight at most: a slow client holds the producer, not
    // memory; one that leaves closes the channel and the producer stops
    // before its next statement.
    let (pages, mut received) = mpsc::channel::<Result<Bytes, ApiError>>(2);
    let channel_id = channel.to_string();
    state
        .db
        .spawn(move |pool| produce(pool, channel_id, query, pages));
    // The first page decides the answer: a database that fails now gets a
    // 503, not a 200 cut short.
    let first = received.recv().await.unwrap_or_else(|| {
        Err(ApiError::unavailable(
            "the export stopped before its first page",
        ))
    })?;
    let rest = futures_util::stream::unfold(received, |mut received| async move {
        let item = received.recv().await?;
        // A failure after the first page can only cut the download short.
        Some((item.map_err(std::io::Error::other), received))
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    let content_type = match format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Ndjson => "application/x-ndjson",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(body))
}

/// `koostatus-<channel>-<from>-<to>.<ext>`, the range as the filters give
/// it (`start`, `now` when open).
fn file_name(channel: &ChannelId, q: &ExportQuery) -> String {
    let day = |t: Option<DateTime<Utc>>, open: &str| {
        t.map_or_else(
            || open.to_owned(),
            |t| t.format("%Y%m%dT%H%M%SZ").to_string(),
        )
    };
    let ext = match q.format {
        ExportFormat::Csv => "csv",
        ExportFormat::Ndjson => "ndjson",
    };
    // Channel ids are letters, digits and `._-`: safe in a quoted filename.
    format!(
        "koostatus-{channel}-{}-{}.{ext}",
        day(q.updated_after, "start"),
        day(q.updated_before, "now")
    )
}

/// Reads the export a page at a time on the main runtime and sends each
/// page encoded; stops at the end, at an error, or when the client is gone.
async fn produce(
    pool: sqlx::PgPool,
    channel: String,
    query: ExportQuery,
    pages: mpsc::Sender<Result<Bytes, ApiError>>,
) {
    let ExportQuery {
        mut filter, format, ..
    } = query;
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
                let _ = pages.send(Err(e.into())).await;
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
fn encode(
    format: ExportFormat,
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
        ExportFormat::Csv => {
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
        ExportFormat::Ndjson => {
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
