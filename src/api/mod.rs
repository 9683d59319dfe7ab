//! The read API for agent desktops: one message with its history, a lookup
//! of many, and a keyset-paginated listing. Bearer tokens scope the channels.

mod caller;
pub mod changes;
pub mod cors;
pub mod events;
pub mod model;
pub mod openapi;

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::auth::tokens::Scope;
use crate::db::messages::{Keyset, ListFilter};
use crate::domain::{ChannelId, Status};
use crate::error::ApiError;
use crate::startup::AppState;
pub use caller::{Caller, bearer};
use model::{LookupRequest, LookupResponse, Message, MessageDetail, MessagePage};

const MAX_LOOKUP_IDS: usize = 1000;
/// 1000 ids of 128 characters of up to 4 bytes, quoted: generous but bounded.
const MAX_LOOKUP_BODY: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(cors::middleware))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("The query string is invalid: {e}."),
                )
                .into()
            }))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/channels/{channel_id}/messages", web::get().to(list))
            .route(
                "/channels/{channel_id}/changes",
                web::get().to(changes::changes),
            )
            .route(
                "/channels/{channel_id}/events",
                web::get().to(events::events),
            )
            .route("/tickets", web::post().to(events::create_ticket))
            .route(
                "/channels/{channel_id}/messages/lookup",
                web::post().to(lookup),
            )
            .route(
                "/channels/{channel_id}/messages/{message_id}",
                web::get().to(get_message),
            )
            // Inside the scope, so that CORS headers come with it too.
            .default_service(web::to(no_such_route)),
    );
}

async fn no_such_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route.".into()))
}

/// The channel, when the caller may read it and it exists. Out of scope,
/// malformed and unknown give the same 404, so a token cannot probe for
/// channels outside its scope.
async fn readable(
    state: &AppState,
    scope: &Scope,
    channel_id: &str,
) -> Result<ChannelId, ApiError> {
    let not_found = || ApiError::NotFound(format!("There is no channel `{channel_id}`."));
    let channel = ChannelId::parse(channel_id).map_err(|_| not_found())?;
    if !scope.allows(channel.as_str()) {
        return Err(not_found());
    }
    if !state.db.channel_exists(channel.to_string()).await? {
        return Err(not_found());
    }
    Ok(channel)
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/messages/{message_id}",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ("message_id" = String, Path)),
    responses(
        (status = 200, description = "The message with its history, oldest first", body = MessageDetail),
        (status = 401, description = "Missing or unknown token", body = model::ErrorBody),
        (status = 404, description = "Unknown message or channel, or a channel outside the token's scope", body = model::ErrorBody),
    )
)]
pub async fn get_message(
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (channel_id, message_id) = path.into_inner();
    let channel = readable(&state, &caller.0, &channel_id).await?;
    let found = state
        .db
        .message(channel.to_string(), message_id.clone())
        .await?;
    let (message, history) = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "There is no message `{message_id}` on channel `{channel}`."
        ))
    })?;
    Ok(HttpResponse::Ok().json(MessageDetail::new(message, history)))
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{channel_id}/messages/lookup",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path)),
    request_body = LookupRequest,
    responses(
        (status = 200, description = "The known messages and the ids not found", body = LookupResponse),
        (status = 400, description = "Not JSON, or not 1 to 1000 ids of 1 to 128 characters", body = model::ErrorBody),
        (status = 401, description = "Missing or unknown token", body = model::ErrorBody),
        (status = 404, description = "Unknown channel or outside the token's scope", body = model::ErrorBody),
    )
)]
pub async fn lookup(
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = readable(&state, &caller.0, &path).await?;
    let body =
        crate::body::read_limited(payload, MAX_LOOKUP_BODY, state.config.server.body_timeout)
            .await?;
    let request: LookupRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("The body must be a JSON object {{\"message_ids\": [...]}}: {e}."),
        )
    })?;
    let ids = unique_ids(request.message_ids)?;
    let ids: std::sync::Arc<[String]> = ids.into();
    let rows = state.db.lookup(channel.to_string(), ids.clone()).await?;
    let mut found: std::collections::HashMap<String, Message> = rows
        .into_iter()
        .map(|m| (m.message_id.clone(), m.into()))
        .collect();
    let mut response = LookupResponse {
        messages: Vec::with_capacity(found.len()),
        missing: Vec::new(),
    };
    for id in ids.iter() {
        match found.remove(id) {
            Some(message) => response.messages.push(message),
            None => response.missing.push(id.clone()),
        }
    }
    Ok(HttpResponse::Ok().json(response))
}

/// Validates the ids of a lookup and drops repeats, keeping first mentions.
fn unique_ids(ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    if ids.is_empty() || ids.len() > MAX_LOOKUP_IDS {
        return Err(ApiError::bad_request(
            "invalid_message_ids",
            format!(
                "`message_ids` must hold 1 to {MAX_LOOKUP_IDS} ids; it holds {}.",
                ids.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    for id in ids {
        if id.is_empty() || id.chars().count() > 128 || id.contains('\0') {
            return Err(ApiError::bad_request(
                "invalid_message_ids",
                "Every message id must be 1 to 128 characters without NUL.",
            ));
        }
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only messages whose current status is this: `failed`, `delivered` or `read`.
    status: Option<String>,
    /// Only messages to this recipient.
    user_number: Option<String>,
    /// Only messages whose status changed after this RFC 3339 time.
    updated_after: Option<String>,
    /// Page size, 1 to 500, default 100.
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/messages",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ListParams),
    responses(
        (status = 200, description = "A page of messages, newest change first", body = MessagePage),
        (status = 400, description = "A bad status, time, limit or cursor", body = model::ErrorBody),
        (status = 401, description = "Missing or unknown token", body = model::ErrorBody),
        (status = 404, description = "Unknown channel or outside the token's scope", body = model::ErrorBody),
    )
)]
pub async fn list(
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = readable(&state, &caller.0, &path).await?;
    let filter = parse_list_params(params.into_inner())?;
    let page_size = filter.limit as usize - 1;
    let mut rows = state.db.list(channel.to_string(), filter).await?;
    // One row more than the page was asked for: it says whether a next page exists.
    let next_cursor = (rows.len() > page_size).then(|| {
        rows.truncate(page_size);
        let last = rows.last().expect("a full page is not empty");
        encode_cursor(&Keyset {
            updated_at: last.updated_at,
            message_id: last.message_id.clone(),
        })
    });
    Ok(HttpResponse::Ok().json(MessagePage {
        messages: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A page size: 100 when absent, else a whole number from 1 to `max`.
fn parse_limit(limit: Option<&str>, max: i64) -> Result<i64, ApiError> {
    let Some(l) = limit else { return Ok(100) };
    l.parse::<i64>()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_limit",
                format!("`limit` must be a whole number from 1 to {max}."),
            )
        })
}

fn parse_list_params(p: ListParams) -> Result<ListFilter, ApiError> {
    let status = p
        .status
        .map(|s| {
            Status::parse(&s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    "`status` must be one of `delivered`, `read` or `failed`.",
                )
            })
        })
        .transpose()?;
    let updated_after =
        p.updated_after
            .map(|t| {
                DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_time",
                    "`updated_after` must be an RFC 3339 time such as 2026-11-23T10:00:00Z.",
                )
            })
            })
            .transpose()?;
    let limit = parse_limit(p.limit.as_deref(), 500)?;
    let after = p.cursor.map(|c| decode_cursor(&c)).transpose()?;
    if p.user_number
        .as_ref()
        .is_some_and(|u| u.is_empty() || u.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_user_number",
            "`user_number` must not be empty.",
        ));
    }
    Ok(ListFilter {
        status,
        user_number: p.user_number,
        updated_after,
        after,
        limit: limit + 1,
    })
}

pub fn encode_cursor(k: &Keyset) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        k.updated_at.timestamp_micros(),
        k.message_id
    ))
}

fn decode_cursor(cursor: &str) -> Result<Keyset, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            "`cursor` must be a `next_cursor` this API returned.",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, message_id) = raw.split_once(':').ok_or_else(bad)?;
    let updated_at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    if message_id.is_empty() || message_id.contains('\0') {
        return Err(bad());
    }
    Ok(Keyset {
        updated_at,
        message_id: message_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let k = Keyset {
            updated_at: Utc::now(),
            message_id: "a:b:c".into(),
        };
        let decoded = decode_cursor(&encode_cursor(&k)).unwrap();
        assert_eq!(decoded.message_id, k.message_id);
        assert_eq!(
            decoded.updated_at.timestamp_micros(),
            k.updated_at.timestamp_micros()
        );
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("nocolon"),
            &URL_SAFE_NO_PAD.encode("x:y"),
            &URL_SAFE_NO_PAD.encode("1:"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
