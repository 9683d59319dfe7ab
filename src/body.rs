//! Reading a request body with a size limit, failures mapped to answers.

use actix_web::web::{self, Bytes};

use crate::error::ApiError;

pub async fn read_limited(payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(ApiError::bad_request("unreadable_body", "The request body could not be read.")),
        Err(_) => Err(ApiError::PayloadTooLarge { limit }),
    }
}
