//! `POST /api/v1/channels/{channel_id}/messages`: the sending side
//! registers the messages it sent, so that koostatus knows them as `sent`
//! before any report, and can tell when none comes (SPEC §13).

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, readable};
use crate::db::registrations::Registration;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

const MAX_MESSAGES: usize = 1000;
const MAX_TAGS: usize = 8;
const MAX_FIELD_CHARS: usize = 128;
const MAX_TAG_CHARS: usize = 64;
/// A `sent_at` may run ahead of our clock by this much (the sender's clock
/// may be a little fast), no more.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// 1000 messages of three 128-character fields of up to 4 bytes and eight
/// 64-character tags, quoted: generous but bounded.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"messages": [{
    "message_id": "044852ee407b40ec88ea65adb73ff5c27",
    "sender": "86173xxxx4526",
    "user_number": "86187xxxx5632",
    "sent_at": "2026-11-23T10:15:00Z",
    "tags": ["black-friday"]
}]}))]
pub struct RegisterRequest {
    /// 1 to 1000 messages, each message id once.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<NewMessage>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    #[schema(min_length = 1, max_length = 128)]
    pub message_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub sender: String,
    #[schema(min_length = 1, max_length = 128)]
    pub user_number: String,
    /// When it was sent (RFC 3339); default now; at most 5 minutes ahead.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<String>,
    /// Up to 8 tags of 1 to 64 characters, e.g. a campaign.
    #[schema(max_items = 8)]
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"registered": 998, "already_known": 1, "conflicts": ["0a1b2c"]}))]
pub struct RegisterResponse {
    /// New messages, now `sent`.
    pub registered: u64,
    /// Known before with the same sender and user number: left as they were
    /// (a message known only from reports gains `sent_at` and `tags`).
    pub already_known: u64,
    /// Known with another sender or user number: nothing of them written.
    pub conflicts: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{channel_id}/messages",
    tag = "register",
    security(("bearer" = [])),
    params(("channel_id" = String, Path)),
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Committed: what was new, what was known, what conflicts", body = RegisterResponse),
        (status = 400, description = "Not JSON, not 1 to 1000 messages, a field missing or too long, a message id twice, `sent_at` not RFC 3339 or in the future, bad tags", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "The token may read but not register (made without `--register`)", body = ErrorBody),
        (status = 404, description = "Unknown channel or outside the token's scope", body = ErrorBody),
        (status = 503, description = "Database unavailable; nothing committed; retry after Retry-After seconds (registering again is harmless)", body = ErrorBody),
    )
)]
pub async fn register(
    Caller(scope): Caller,
    channel_id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = readable(&state, &scope, &channel_id).await?;
    if !scope.register {
        return Err(ApiError::Forbidden(
            "This token may read but not register messages; create one with `koostatus token create --register`.",
        ));
    }
    let body =
        crate::body::read_limited(payload, MAX_BODY, state.config.server.body_timeout).await?;
    let request: RegisterRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("The body must be {{\"messages\": [{{\"message_id\", \"sender\", \"user_number\", \"sent_at\"?, \"tags\"?}}]}}: {e}."),
        )
    })?;
    let now = Utc::now();
    let batch = validate(request, now)?;
    let db = &state.config.database;
    let deadline = db.acquire_timeout + db.commit_deadline();
    // As the webhook's writer: a commit not confirmed in time is a 503
    // (registering again is harmless), never a 200.
    let done = tokio::time::timeout(deadline, state.db.register(channel.to_string(), batch, now))
        .await
        .map_err(|_| ApiError::unavailable("the database did not answer in time"))??;
    Ok(HttpResponse::Ok().json(RegisterResponse {
        registered: done.registered,
        already_known: done.already_known,
        conflicts: done.conflicts,
    }))
}

fn validate(request: RegisterRequest, now: DateTime<Utc>) -> Result<Vec<Registration>, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_registration", message);
    let n = request.messages.len();
    if n == 0 || n > MAX_MESSAGES {
        return Err(bad(format!(
            "`messages` must hold 1 to {MAX_MESSAGES} messages; it holds {n}."
        )));
    }
    let mut seen = HashSet::with_capacity(n);
    let mut batch = Vec::with_capacity(n);
    for (i, m) in request.messages.into_iter().enumerate() {
        for (name, value) in [
            ("message_id", &m.message_id),
            ("sender", &m.sender),
            ("user_number", &m.user_number),
        ] {
            if value.is_empty() || value.chars().count() > MAX_FIELD_CHARS || value.contains('\0') {
                return Err(bad(format!(
                    "`messages[{i}].{name}` must be 1 to {MAX_FIELD_CHARS} characters without NUL."
                )));
            }
        }
        if !seen.insert(m.message_id.clone()) {
            return Err(bad(format!(
                "Message `{}` appears twice in `messages`; register each once.",
                m.message_id
            )));
        }
        let sent_at = match &m.sent_at {
            None => now,
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    bad(format!(
                        "`messages[{i}].sent_at` must be an RFC 3339 time such as 2026-11-23T10:15:00Z."
                    ))
                })?
                .with_timezone(&Utc),
        };
        if sent_at > now + CLOCK_SKEW {
            return Err(bad(format!(
                "`messages[{i}].sent_at` is more than 5 minutes in the future; check the sender's clock."
            )));
        }
        if m.tags.len() > MAX_TAGS || m.tags.iter().any(|t| !super::params::valid_tag(t)) {
            return Err(bad(format!(
                "`messages[{i}].tags` must be up to {MAX_TAGS} tags of 1 to {MAX_TAG_CHARS} characters without NUL."
            )));
        }
        let mut tags = m.tags;
        tags.sort();
        tags.dedup();
        batch.push(Registration {
            message_id: m.message_id,
            sender: m.sender,
            user_number: m.user_number,
            sent_at,
            tags,
        });
    }
    Ok(batch)
}
