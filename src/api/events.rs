//! Live changes for agent desktops: `/events` (Server-Sent Events through
//! the instance's shared fan-out, see live/) and the stream tickets that
//! let a browser's `EventSource` open it without an Authorization header.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::changes::parse_position;
use super::{Caller, bearer, readable};
use crate::auth::tokens::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::live::stream::Stream;
use crate::state::AppState;

/// User numbers one stream may follow at most.
const MAX_USER_NUMBERS: usize = 100;

/// A stream ticket (SPEC §8).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "ticket": "kstt_5f0c…",
    "expires_at": "2026-11-24T10:26:40Z"
}))]
pub struct Ticket {
    /// Pass as `?ticket=` to `/events`; shown once, stored only as a hash.
    pub ticket: String,
    /// Until then `/events` accepts it, and `EventSource` can reconnect with it.
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tickets",
    tag = "read",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A ticket for `/events?ticket=`, with the token's scope, valid for `events.ticket_ttl` or until the token is revoked", body = Ticket),
        super::TokenRefusal,
    )
)]
pub async fn create_ticket(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let issued = state
        .tokens
        .issue_ticket(&caller.0, state.config.events.ticket_ttl)
        .await?;
    let (ticket, expires_at) =
        issued.ok_or(ApiError::BadToken("The bearer token is not valid."))?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Ticket { ticket, expires_at }))
}

/// The query of `/events`; `user_number` may repeat, which serde's query
/// extractor cannot express, so it is parsed here.
#[derive(Default)]
struct EventsQuery {
    after: Option<String>,
    ticket: Option<String>,
    user_numbers: Vec<String>,
}

fn parse_query(query: &str) -> Result<EventsQuery, ApiError> {
    let mut q = EventsQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "after" => q.after = Some(value.into_owned()),
            "ticket" => q.ticket = Some(value.into_owned()),
            "user_number" => {
                if value.is_empty() || value.chars().count() > 128 || value.contains('\0') {
                    return Err(ApiError::bad_request(
                        "invalid_user_number",
                        "Every `user_number` must be 1 to 128 characters.",
                    ));
                }
                if !q.user_numbers.iter().any(|n| *n == value) {
                    q.user_numbers.push(value.into_owned());
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "The query string is invalid: unknown parameter `{other}`; `/events` takes `after`, `ticket` and `user_number`."
                    ),
                ));
            }
        }
    }
    if q.user_numbers.len() > MAX_USER_NUMBERS {
        return Err(ApiError::bad_request(
            "invalid_user_number",
            format!(
                "A stream follows at most {MAX_USER_NUMBERS} user numbers; {} were given.",
                q.user_numbers.len()
            ),
        ));
    }
    Ok(q)
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/events",
    tag = "read",
    security(("bearer" = []), ("ticket" = [])),
    params(
        ("channel_id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position (sent by EventSource on reconnect); wins over `after`"),
        ("after" = Option<String>, Query, description = "Start after this position; without it (and without `Last-Event-ID`) the stream starts with the next change"),
        ("ticket" = Option<String>, Query, description = "A ticket from `POST /api/v1/tickets`, for clients that cannot send `Authorization` (a browser's EventSource)"),
        ("user_number" = Option<Vec<String>>, Query, explode = true, description = "Only changes of messages to these user numbers; repeatable, up to 100"),
    ),
    responses(
        (status = 200, description = "text/event-stream: one `change` event per change, its position as the event id and a ChangeEntry as data; a comment line `: open` at once and `: keep-alive` every `server.events_heartbeat` while idle. The stream ends on shutdown, when its token is revoked, or when its client reads too slowly (`events.buffer`); reconnect with `Last-Event-ID`.", content_type = "text/event-stream"),
        (status = 400, description = "A bad position, user number or parameter", body = ErrorBody),
        super::ChannelRefusals,
    )
)]
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = parse_query(req.query_string())?;
    let scope = authenticate(&req, &state, query.ticket.as_deref()).await?;
    let channel = readable(&state, &scope, &path).await?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let start = last_event_id
        .or(query.after.as_deref())
        .map(parse_position)
        .transpose()?;
    let user_numbers: Option<Arc<[String]>> =
        (!query.user_numbers.is_empty()).then(|| query.user_numbers.into());
    let subscription = state
        .hub
        .subscribe(channel.as_str(), user_numbers.clone(), scope.token)
        .await?;
    let stream = Stream {
        db: state.db.clone(),
        channel: channel.to_string(),
        user_numbers,
        // Without a start: the next change, which is where it joined.
        position: start.unwrap_or(subscription.joined_at),
        subscription,
        heartbeat: state.config.server.events_heartbeat,
    }
    .start();
    // A comment at once: Firefox fires EventSource's `open` only at the
    // body's first bytes, not at the headers, so a desktop would show
    // "connecting" until the first change or heartbeat.
    let opened = futures_util::stream::once(std::future::ready(Ok::<_, actix_web::Error>(
        actix_web::web::Bytes::from_static(b": open\n\n"),
    )));
    let changes = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    let body = futures_util::StreamExt::chain(opened, changes);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx and friends would otherwise buffer the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// A bearer token, else a ticket.
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    ticket: Option<&str>,
) -> Result<Scope, ApiError> {
    if let Some(token) = bearer(req) {
        return state
            .tokens
            .authenticate(token)
            .await?
            .ok_or(ApiError::BadToken("The bearer token is not valid."));
    }
    let Some(ticket) = ticket else {
        return Err(ApiError::BadToken(
            "A bearer token (`Authorization: Bearer <token>`) or a ticket (`?ticket=`, from POST /api/v1/tickets) is required.",
        ));
    };
    state
        .tokens
        .redeem_ticket(ticket)
        .await?
        .ok_or(ApiError::BadToken(
            "The ticket is not valid or has expired; get a new one with POST /api/v1/tickets.",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_takes_repeated_user_numbers_and_refuses_the_unknown() {
        let q =
            parse_query("user_number=1&after=5-2&user_number=%2B34%20600&user_number=1").unwrap();
        assert_eq!(q.user_numbers, ["1", "+34 600"]);
        assert_eq!(q.after.as_deref(), Some("5-2"));
        assert!(parse_query("colour=red").is_err());
        assert!(parse_query("user_number=").is_err());
        let many: Vec<String> = (0..101).map(|i| format!("user_number={i}")).collect();
        assert!(parse_query(&many.join("&")).is_err());
        let enough: Vec<String> = (0..100).map(|i| format!("user_number={i}")).collect();
        assert_eq!(
            parse_query(&enough.join("&")).unwrap().user_numbers.len(),
            100
        );
    }
}
