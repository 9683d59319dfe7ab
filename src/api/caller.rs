//! The caller of the read API: extractors that turn
//! `Authorization: Bearer <token>` into the token's scope, and the path's
//! `{channel_id}` into a channel that scope may read.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::auth::tokens::Scope;
use crate::domain::ChannelId;
use crate::error::ApiError;
use crate::state::AppState;

pub struct Caller(pub Scope);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .expect("AppState is registered");
        let token = bearer(req).map(str::to_owned);
        Box::pin(async move {
            let token = token.ok_or(ApiError::BadToken(
                "A bearer token is required: `Authorization: Bearer <token>`.",
            ))?;
            match state.tokens.authenticate(&token).await {
                Ok(Some(scope)) => Ok(Caller(scope)),
                Ok(None) => Err(ApiError::BadToken("The bearer token is not valid.")),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// The path's `{channel_id}`: a channel that exists and that the bearer
/// token may read (401 without a valid token, 404 otherwise).
pub struct Readable(pub ChannelId);

impl FromRequest for Readable {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Readable, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .expect("AppState is registered");
        let channel_id = req.match_info().query("channel_id").to_owned();
        Box::pin(async move {
            let Caller(scope) = caller.await?;
            Ok(Readable(
                super::readable(&state, &scope, &channel_id).await?,
            ))
        })
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
