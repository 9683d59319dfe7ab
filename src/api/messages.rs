//! The message handlers of the read API: one message with its history, a
//! lookup of many, and the keyset-paginated listing.

use actix_web::{HttpResponse, web};

use super::Readable;
use super::params::{ListParams, encode_cursor, parse_list_params};
use crate::db::messages::Keyset;
use crate::domain::ChannelId;
use crate::error::{ApiError, ErrorBody};
use crate::model::{LookupRequest, LookupResponse, Message, MessageDetail, MessagePage};
use crate::state::AppState;

const MAX_LOOKUP_IDS: usize = 1000;
/// 1000 ids of 128 characters of up to 4 bytes, quoted: generous but bounded.
const MAX_LOOKUP_BODY: usize = 1024 * 1024;

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/messages/{message_id}",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ("message_id" = String, Path)),
    responses(
        (status = 200, description = "The message with its history, oldest first", body = MessageDetail),
        super::TokenRefusal,
        (status = 404, description = "Unknown message or channel, or a channel outside the token's scope", body = ErrorBody),
    )
)]
pub async fn get_message(
    Readable(channel): Readable,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, message_id) = path.into_inner();
    message(channel, message_id, &state).await
}

/// `GET …/messages/lookup`: the message whose id is `lookup`. The lookup's
/// route owns that path (POST), so it answers GET for it too, and says so in
/// the document (its `Allow` lists both).
// A deliberate mirror of get_message and its document: the same answer on
// a path of its own.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/messages/lookup",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path)),
    responses(
        (status = 200, description = "The message whose id is `lookup`, as GET …/messages/{message_id} answers it", body = MessageDetail),
        super::TokenRefusal,
        (status = 404, description = "No message `lookup`, an unknown channel, or one outside the token's scope", body = ErrorBody),
    )
)]
pub async fn get_message_named_lookup(
    Readable(channel): Readable,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    message(channel, "lookup".to_owned(), &state).await
}

async fn message(
    channel: ChannelId,
    message_id: String,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
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
        (status = 400, description = "Not JSON, or not 1 to 1000 ids of 1 to 128 characters", body = ErrorBody),
        super::ChannelRefusals,
    )
)]
pub async fn lookup(
    Readable(channel): Readable,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/messages",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), ListParams),
    responses(
        (status = 200, description = "A page of messages, newest change first", body = MessagePage),
        (status = 400, description = "A bad status, time, limit or cursor", body = ErrorBody),
        super::ChannelRefusals,
    )
)]
pub async fn list(
    Readable(channel): Readable,
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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
