//! `GET /api/v1/channels/{channel_id}/export`: a channel's messages as a
//! download for supervisors (SPEC §15), streamed from the database a page
//! at a time (`crate::export`): never the whole result in memory.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::Readable;
use super::params::{ExportParams, ExportQuery, parse_export_params};
use crate::domain::ChannelId;
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, produce};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/export",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ExportParams),
    responses(
        (status = 200, description = "The messages the listing's filters select, newest change first, as an attachment: CSV (RFC 4180, a header row channel_id, message_id, sender, user_number, status, first_seen_at, updated_at, sent_at, failed_at, delivered_at, read_at, tags joined by `;`; a cell starting with = + - @ tab or CR is prefixed with ') or NDJSON (one message per line as the listing writes it, plus failed_at, delivered_at and read_at)", content(
            (String = "text/csv"),
            (String = "application/x-ndjson")
        )),
        (status = 400, description = "A bad format, status, time or filter", body = ErrorBody),
        super::ChannelRefusals,
        (status = 503, description = "Database unavailable, or two exports already running on this instance (`busy`); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub async fn export(
    Readable(channel): Readable,
    params: web::Query<ExportParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = parse_export_params(params.into_inner())?;
    let running = state.exports.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy("Two exports are running on this instance already; retry in a minute.")
    })?;
    let name = file_name(&channel, &query);
    let format = query.format;
    // Two pages in flight at most: a slow client holds the producer, not
    // memory; one that leaves closes the channel and the producer stops
    // before its next statement.
    let (pages, mut received) = mpsc::channel(2);
    let channel_id = channel.to_string();
    let filter = query.filter;
    let urgent = Box::new(state.writer.reports_written());
    state.db.spawn(move |pool| async move {
        produce(pool, channel_id, filter, pages, Some(urgent)).await;
        drop(running);
    });
    let encoder = state.export_encoder.clone();
    // The first page decides the answer: a database that fails now gets a
    // 503, not a 200 cut short.
    let first = match received.recv().await {
        Some(first) => encoder.encode(format, first?).await,
        None => {
            return Err(ApiError::unavailable(
                "the export stopped before its first page",
            ));
        }
    };
    let rest = futures_util::stream::unfold(
        (received, encoder),
        move |(mut received, encoder)| async move {
            // A failure after the first page can only cut the download short.
            let bytes = match received.recv().await? {
                Ok(page) => Ok(encoder.encode(format, page).await),
                Err(e) => Err(std::io::Error::other(e)),
            };
            Some((bytes, (received, encoder)))
        },
    );
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Ndjson => "application/x-ndjson",
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
    let ext = q.format.extension();
    // Channel ids are letters, digits and `._-`: safe in a quoted filename.
    format!(
        "koostatus-{channel}-{}-{}.{ext}",
        day(q.filter.updated_after, "start"),
        day(q.updated_before, "now")
    )
}
