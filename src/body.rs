//! Reading a request body with a size limit, failures mapped to answers.

use std::time::Duration;

use actix_web::web::{self, Bytes};

use crate::error::ApiError;

/// `timeout` bounds the whole body: a client sending a byte now and then
/// cannot hold a worker's request open for long.
pub async fn read_limited(
    payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, payload.to_bytes_limited(limit)).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(_))) => Err(ApiError::bad_request(
            "unreadable_body",
            "The request body could not be read.",
        )),
        Ok(Err(_)) => Err(ApiError::PayloadTooLarge { limit }),
        Err(_) => Err(ApiError::RequestTimeout),
    }
}
