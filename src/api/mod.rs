//! The read API for agent desktops: routes, and the scope check every
//! handler starts with. Bearer tokens (or, for `/events`, tickets) scope
//! the channels.

mod caller;
pub mod changes;
pub mod cors;
pub mod events;
pub mod messages;
pub mod model;
pub mod openapi;
mod params;

use actix_web::{HttpResponse, web};

use crate::auth::tokens::Scope;
use crate::domain::ChannelId;
use crate::error::ApiError;
use crate::state::AppState;
pub use caller::{Caller, bearer};
use messages::{get_message, list, lookup};
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
