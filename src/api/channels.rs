//! `GET /api/v1/channels`: the channels a token may read, for a console or
//! a desktop to offer.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::Caller;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "202105102694809992", "name": "Campaigns", "enabled": true}))]
pub struct Channel {
    pub id: String,
    pub name: String,
    /// Whether the webhook takes its callbacks.
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// Ordered by id.
    pub channels: Vec<Channel>,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "read",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channels the token may read", body = ChannelList),
        super::TokenRefusal,
    )
)]
pub async fn channels(
    Caller(scope): Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channels = (state.db.channels().await?.into_iter())
        .filter(|c| scope.allows(&c.id))
        .map(|c| Channel {
            id: c.id,
            name: c.name,
            enabled: c.enabled,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ChannelList { channels }))
}
