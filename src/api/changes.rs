//! The changes feed of a channel, read page by page (`/changes`). It starts
//! after a position and goes on in position order; see db/changes.rs for
//! why that order is lossless. `/events` pushes the same changes (events.rs).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::{Readable, parse_limit};
use crate::db::changes::Position;
use crate::error::{ApiError, ErrorBody};
use crate::model::ChangePage;
use crate::state::AppState;

const MAX_LIMIT: i64 = 1000;

pub fn parse_position(s: &str) -> Result<Position, ApiError> {
    Position::parse(s).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_position",
            format!("`{s}` is not a feed position; use the `position` of a change or \"0-0\"."),
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// Changes after this position; "0-0" (the default) is from the start.
    #[param(pattern = "^[0-9]{1,18}-[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
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
        (status = 400, description = "A bad position or limit", body = ErrorBody),
        super::ChannelRefusals,
    )
)]
pub async fn changes(
    Readable(channel): Readable,
    params: web::Query<ChangesParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let after = params
        .after
        .as_deref()
        .map_or(Ok(Position::default()), parse_position)?;
    let limit = parse_limit(params.limit.as_deref(), MAX_LIMIT)?;
    let changes = state
        .db
        .changes_after(channel.to_string(), after, limit)
        .await?;
    let next = changes.last().map_or(after, |c| c.position);
    Ok(HttpResponse::Ok().json(ChangePage {
        changes: changes.into_iter().map(Into::into).collect(),
        next: next.to_string(),
    }))
}
