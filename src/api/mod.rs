//! The read API for agent desktops: routes, and the scope check every
//! handler starts with. Bearer tokens (or, for `/events`, tickets) scope
//! the channels.

mod caller;
pub mod changes;
pub mod channels;
pub mod cors;
pub mod events;
pub mod export;
pub mod messages;
pub mod openapi;
mod params;
pub mod registration;
pub mod stats;
pub mod webhook;

use actix_web::http::Method;
use actix_web::{HttpResponse, web};

use crate::auth::tokens::Scope;
use crate::domain::ChannelId;
use crate::error::{ApiError, only};
use crate::state::AppState;
pub use caller::{Caller, Readable, bearer};
use messages::{get_message, get_message_named_lookup, list, lookup};
pub use params::encode_cursor;
pub(crate) use params::parse_limit;

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
            .service(one(Method::GET, "/openapi.json", openapi::document))
            .service(one(Method::GET, "/channels", channels::channels))
            .service(
                web::resource("/channels/{channel_id}/messages")
                    .get(list)
                    .post(registration::register)
                    .default_service(only("GET, POST")),
            )
            .service(one(
                Method::GET,
                "/channels/{channel_id}/changes",
                changes::changes,
            ))
            .service(one(
                Method::GET,
                "/channels/{channel_id}/events",
                events::events,
            ))
            .service(one(
                Method::GET,
                "/channels/{channel_id}/stats",
                stats::stats,
            ))
            // Not under /messages/, where it would hide a message whose id
            // is `export`.
            .service(one(
                Method::GET,
                "/channels/{channel_id}/export",
                export::export,
            ))
            .service(one(Method::POST, "/tickets", events::create_ticket))
            .service(
                web::resource("/channels/{channel_id}/messages/lookup")
                    .post(lookup)
                    .get(get_message_named_lookup)
                    .default_service(only("GET, POST")),
            )
            .service(one(
                Method::GET,
                "/channels/{channel_id}/messages/{message_id}",
                get_message,
            ))
            // Inside the scope, so that CORS headers come with it too.
            .default_service(web::to(no_such_route)),
    );
}

/// A route of one method (GET or POST); the others get 405 with `Allow`.
fn one<F, Args>(method: Method, path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let allow = if method == Method::GET { "GET" } else { "POST" };
    (web::resource(path).route(web::method(method).to(handler))).default_service(only(allow))
}

async fn no_such_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route.".into()))
}

/// The refusal of every route that takes a bearer token, for the OpenAPI
/// document.
#[derive(utoipa::IntoResponses)]
pub enum TokenRefusal {
    #[response(status = 401, description = "Missing or unknown token")]
    Unauthorized(crate::error::ErrorBody),
}

/// The refusals of every route guarded by [`readable`], for the OpenAPI
/// document.
#[derive(utoipa::IntoResponses)]
pub enum ChannelRefusals {
    #[response(
        status = 401,
        description = "Missing or unknown token (or, for `/events`, ticket)"
    )]
    Unauthorized(crate::error::ErrorBody),
    #[response(
        status = 404,
        description = "Unknown channel or outside the token's scope"
    )]
    NotFound(crate::error::ErrorBody),
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
