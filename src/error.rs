//! The one error type of the HTTP interface: every failure becomes a status
//! code and a body `{"error": "<code>", "message": "<sentence>"}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The request body is larger than {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Authentication failed.")]
    Unauthorized,
    #[error("{0}")]
    BadToken(&'static str),
    #[error(
        "Too many failed authentications from this client or for this channel; retry after {retry_after_secs} s."
    )]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("The request body did not arrive in time.")]
    RequestTimeout,
    #[error("The Content-Type must be application/json.")]
    UnsupportedMediaType,
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error(
        "Message `{message_id}` is already known with another sender or user_number; nothing was written."
    )]
    Conflict { message_id: String },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// `allow`: the methods the route takes, for the `Allow` header.
    #[error("This method is not allowed here; the route takes {allow}.")]
    MethodNotAllowed { allow: &'static str },
    /// Answered 503 with `Retry-After` (`webhook.retry_after`, added by
    /// [`retry_after`] for every 503).
    #[error("The database is unavailable; nothing was stored. Retry later.")]
    Unavailable { cause: String },
    /// Answered 503 with `Retry-After`, like Unavailable: a bounded
    /// resource of this instance is in use (the sentence says which).
    #[error("{0}")]
    Busy(&'static str),
    #[error("An internal error occurred; nothing was stored.")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "No message `x` on channel `202105102694809992`."}))]
pub struct ErrorBody {
    /// A snake_case code to match on.
    pub error: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unavailable(cause: impl Into<String>) -> ApiError {
        ApiError::Unavailable {
            cause: cause.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized | ApiError::BadToken(_) => "unauthorized",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadRequest { code, .. } => code,
            ApiError::Conflict { .. } => "conflict",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Busy(_) => "busy",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::BadToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable { .. } | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // The cause stays in the log; the client gets an opaque sentence.
            ApiError::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            ApiError::Unavailable { cause, .. } => {
                tracing::warn!(error = cause, "database unavailable")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::TooManyAttempts { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if let ApiError::BadToken(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

/// A resource's answer to every method it does not take: 405 with `Allow`.
pub fn only(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    })
}

/// A database error: unavailability answers 503 so the sender retries;
/// anything else is a fault of ours.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        if crate::db::is_unavailable(&e) {
            ApiError::unavailable(e.to_string())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        use crate::auth::AuthError;
        match e {
            AuthError::Denied => ApiError::Unauthorized,
            AuthError::Throttled { retry_after_secs } => {
                ApiError::TooManyAttempts { retry_after_secs }
            }
            AuthError::Database(e) => e.into(),
        }
    }
}

/// The one place `Retry-After` is set for 503 answers: the configured
/// `webhook.retry_after`, in whole seconds (at least 1).
pub async fn retry_after(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let secs = req
        .app_data::<actix_web::web::Data<RetryAfter>>()
        .map_or(1, |r| r.0);
    let mut response = next.call(req).await?;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::RETRY_AFTER)
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(response)
}

/// `webhook.retry_after` in whole seconds, for [`retry_after`].
pub struct RetryAfter(pub u64);

impl RetryAfter {
    pub fn new(d: std::time::Duration) -> RetryAfter {
        RetryAfter(d.as_secs_f64().ceil().max(1.0) as u64)
    }
}
