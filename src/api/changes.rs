//! The changes feed of a channel, read page by page (`/changes`) or pushed
//! as Server-Sent Events (`/events`). Both start after a position and go on
//! in position order; see db/changes.rs for why that order is lossless.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::model::{ChangeEntry, ChangePage};
use super::{Caller, model, parse_limit, readable};
use crate::db;
use crate::db::Db;
use crate::db::changes::{Change, Position};
use crate::error::ApiError;
use crate::feed::Wake;
use crate::startup::AppState;

const MAX_LIMIT: i64 = 1000;
/// While committed changes wait behind an older running transaction, look
/// again this often.
const RETRY_SOON: Duration = Duration::from_millis(100);
/// The most often one stream reads the feed: 20 reads a second per stream
/// at worst, however many commits wake it.
const MIN_READ_GAP: Duration = Duration::from_millis(50);

/// `<xid>-<seq>`; "0-0" is before the first change.
pub fn format_position(p: Position) -> String {
    format!("{}-{}", p.xid, p.seq)
}

fn parse_position(s: &str) -> Result<Position, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_position",
            format!("`{s}` is not a feed position; use the `position` of a change or \"0-0\"."),
        )
    };
    let (xid, seq) = s.split_once('-').ok_or_else(bad)?;
    let number = |n: &str| {
        n.parse::<i64>()
            .ok()
            .filter(|&v| v >= 0 && !n.starts_with('+'))
    };
    Ok(Position {
        xid: number(xid).ok_or_else(bad)?,
        seq: number(seq).ok_or_else(bad)?,
    })
}

fn entry(c: Change) -> ChangeEntry {
    ChangeEntry {
        position: format_position(c.position),
        message_id: c.message_id,
        status: c.status,
        changed_at: c.changed_at,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// Changes after this position; "0-0" (the default) is from the start.
    after: Option<String>,
    /// Page size, 1 to 1000, default 100.
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/changes",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ChangesParams),
    responses(
        (status = 200, description = "Changes of current status after the position, in order, and the position to ask after next", body = ChangePage),
        (status = 400, description = "A bad position or limit", body = model::ErrorBody),
        (status = 401, description = "Missing or unknown token", body = model::ErrorBody),
        (status = 404, description = "Unknown channel or outside the token's scope", body = model::ErrorBody),
    )
)]
pub async fn changes(
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<ChangesParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = readable(&state, &caller, &path).await?;
    let params = params.into_inner();
    let after = params
        .after
        .as_deref()
        .map_or(Ok(Position::default()), parse_position)?;
    let limit = parse_limit(params.limit.as_deref(), MAX_LIMIT)?;
    let ch = channel.to_string();
    let changes = state
        .db
        .run(|pool| async move { db::changes::after(&pool, &ch, after, limit).await })
        .await
        .map_err(|e| state.db_error(e))?;
    let next = changes.last().map_or(after, |c| c.position);
    Ok(HttpResponse::Ok().json(ChangePage {
        changes: changes.into_iter().map(entry).collect(),
        next: format_position(next),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Start after this position; without it (and without `Last-Event-ID`)
    /// the stream starts with the next change.
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/events",
    tag = "read",
    security(("bearer" = [])),
    params(
        ("channel_id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position (sent by EventSource on reconnect); wins over `after`"),
        EventsParams,
    ),
    responses(
        (status = 200, description = "text/event-stream: one `change` event per change, its position as the event id and a ChangeEntry as data; a comment line every `server.events_heartbeat` while idle", content_type = "text/event-stream"),
        (status = 400, description = "A bad position", body = model::ErrorBody),
        (status = 401, description = "Missing or unknown token", body = model::ErrorBody),
        (status = 404, description = "Unknown channel or outside the token's scope", body = model::ErrorBody),
    )
)]
pub async fn events(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<EventsParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = readable(&state, &caller, &path).await?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let ch = channel.to_string();
    let start = match last_event_id.or(params.after.as_deref()) {
        Some(p) => parse_position(p)?,
        None => state
            .db
            .run(|pool| async move { db::changes::head(&pool, &ch).await })
            .await
            .map_err(|e| state.db_error(e))?,
    };
    let follower = Follower {
        db: state.db.clone(),
        channel: channel.to_string(),
        position: start,
        pending: VecDeque::new(),
        wake: state.hub.subscribe(),
        shutdown: state.shutdown.subscribe(),
        heartbeat: state.config.server.events_heartbeat,
        last_sent: std::time::Instant::now(),
        last_read: None,
        _open: Subscribed::new(),
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        let chunk = f.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), f))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx and friends would otherwise buffer the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// One `/events` stream: reads the feed after its position whenever woken.
struct Follower {
    db: Db,
    channel: String,
    position: Position,
    pending: VecDeque<Change>,
    wake: broadcast::Receiver<Wake>,
    shutdown: watch::Receiver<bool>,
    heartbeat: Duration,
    /// When the stream last sent anything: a heartbeat is due `heartbeat` later.
    last_sent: std::time::Instant,
    last_read: Option<std::time::Instant>,
    _open: Subscribed,
}

impl Follower {
    /// The next piece of the stream; None ends it (shutdown, or a database
    /// error: the client reconnects with `Last-Event-ID` and loses nothing).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                self.position = change.position;
                self.last_sent = std::time::Instant::now();
                let id = format_position(change.position);
                let data = serde_json::to_string(&entry(change)).expect("serialisable");
                return Some(Bytes::from(format!(
                    "id: {id}\nevent: change\ndata: {data}\n\n"
                )));
            }
            // On a busy channel every batch commit wakes every stream: read at
            // most every MIN_READ_GAP, the wake-ups in between coalesced.
            if let Some(last) = self.last_read {
                tokio::time::sleep_until((last + MIN_READ_GAP).into()).await;
                while self.wake.try_recv().is_ok() {}
            }
            self.last_read = Some(std::time::Instant::now());
            let (ch, after) = (self.channel.clone(), self.position);
            let read = self
                .db
                .run(|pool| async move { db::changes::after(&pool, &ch, after, 500).await })
                .await;
            let changes = match read {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::warn!(error = %e, "an events stream could not read the feed; closing it");
                    return None;
                }
            };
            if !changes.is_empty() {
                self.pending.extend(changes);
                continue;
            }
            // Committed changes held back by an older running transaction
            // become readable when it ends, and that end may notify nobody
            // (a transaction that changed no status). Asked after the read,
            // this also covers one that ended in between: look again soon.
            let (ch, after) = (self.channel.clone(), self.position);
            let held = match self
                .db
                .run(|pool| async move { db::changes::any_after(&pool, &ch, after).await })
                .await
            {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "an events stream could not read the feed; closing it");
                    return None;
                }
            };
            let until_heartbeat = self.heartbeat.saturating_sub(self.last_sent.elapsed());
            let idle = tokio::time::sleep(if held {
                RETRY_SOON.min(until_heartbeat)
            } else {
                until_heartbeat
            });
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    () = &mut idle => {
                        if self.last_sent.elapsed() >= self.heartbeat {
                            self.last_sent = std::time::Instant::now();
                            return Some(Bytes::from_static(b": keep-alive\n\n"));
                        }
                        break;
                    }
                    woke = self.wake.recv() => match woke {
                        Ok(w) if !w.concerns(&self.channel) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                        // Ours, or lagged (some may have been ours): read again.
                        _ => break,
                    },
                    _ = self.shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Counts open streams for the `koostatus_events_subscribers` gauge.
struct Subscribed;

impl Subscribed {
    fn new() -> Subscribed {
        metrics::gauge!("koostatus_events_subscribers").increment(1.0);
        Subscribed
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        metrics::gauge!("koostatus_events_subscribers").decrement(1.0);
    }
}
