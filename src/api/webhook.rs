//! The KooMessage webhook: authenticates a delivery report, validates it and
//! answers 200 only once it is committed.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use utoipa::{OpenApi, ToSchema};

use crate::db::reports::Incoming;
use crate::domain::{ChannelId, Report, Status};
use crate::error::{ApiError, ErrorBody};
use crate::ingest::WriteError;
use crate::state::AppState;
use crate::telemetry::Outcome;

pub const ROUTE: &str = "/social/on/whatsapp/koomessage/report/{channel_id}";

/// The webhook's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(report), components(schemas(ReportBody)), modifiers(&WebhookPassword))]
pub struct WebhookApi;

struct WebhookPassword;

impl utoipa::Modify for WebhookPassword {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        // KooMessage sends the bare webhook password, no scheme.
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "webhook_password",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))),
        );
    }
}

// For the document only: the handler parses the body itself, to name what
// is wrong.
/// A delivery report as KooMessage sends it; other fields are kept.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "sender": "86173xxxx4526",
    "user_number": "86187xxxx5632",
    "message_id": "044852ee407b40ec88ea65adb73ff5c27",
    "status": "read"
}))]
pub struct ReportBody {
    #[schema(min_length = 1, max_length = 128)]
    pub message_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub sender: String,
    #[schema(min_length = 1, max_length = 128)]
    pub user_number: String,
    /// `sent`, `unreported`, `failed`, `delivered` or `read`; any other
    /// lowercase word is kept in the history without changing the status.
    #[schema(pattern = "^[a-z][a-z_]{0,31}$", example = "read")]
    pub status: String,
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::Unavailable(cause) => ApiError::unavailable(cause),
            WriteError::Failed(e) => ApiError::Internal(e.into()),
        }
    }
}

#[utoipa::path(
    post,
    path = "/social/on/whatsapp/koomessage/report/{channel_id}",
    tag = "webhook",
    security(("webhook_password" = [])),
    params(("channel_id" = String, Path, description = "The KooMessage channel id")),
    request_body(content = ReportBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored and committed (also a duplicate or late report); empty body"),
        (status = 400, description = "Not JSON, not an object, a field missing, empty, too long or not a string, or a status that is not a lowercase word", body = ErrorBody),
        (status = 401, description = "No or wrong password, unknown or disabled channel", body = ErrorBody),
        (status = 403, description = "The client's address is outside webhook.allowed_networks (checked before the password)", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this client or for this channel; see Retry-After", body = ErrorBody),
        (status = 409, description = "The message is known with another sender or user_number; nothing written", body = ErrorBody),
        (status = 413, description = "Body larger than webhook.max_body_bytes", body = ErrorBody),
        (status = 415, description = "Content-Type missing or not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable; retry after Retry-After seconds", body = ErrorBody),
    )
)]
/// The webhook, counting its refusals by error code.
pub async fn report(
    req: HttpRequest,
    channel_id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let answer = handle(req, channel_id, payload, state).await;
    if let Err(e) = &answer {
        metrics::counter!("koostatus_reports_rejected_total", "reason" => e.code()).increment(1);
    }
    answer
}

/// Checks run in the order of the contract: size, authentication, content
/// type, body, state. Nothing of the body is read before authentication.
async fn handle(
    req: HttpRequest,
    channel_id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let received_at = Utc::now();
    let limits = &state.config.webhook;
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: limits.max_body_bytes,
        });
    }

    let password = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let client = state.credentials.limiter().client(&req);
    let networks = &limits.allowed_networks;
    if !networks.is_empty() && !client.is_some_and(|ip| networks.iter().any(|n| n.contains(&ip))) {
        return Err(ApiError::Forbidden(
            "Callbacks are not accepted from this address (webhook.allowed_networks).",
        ));
    }
    let auth = match ChannelId::parse(&channel_id) {
        Ok(channel) => state
            .credentials
            .authenticate(&channel, password, client)
            .await
            .map(|()| channel),
        // One budget for every malformed id, so made-up ids add no keys.
        Err(_) => Err(state.credentials.reject(password, client, "").await),
    };
    let channel = match auth {
        Ok(channel) => channel,
        Err(e) => {
            // The answer is decided; the body (at most max_body_bytes, within
            // body_timeout) is read only so that the connection stays open:
            // behind a load balancer, refusing guesses must not cost a new
            // connection each.
            let _ = crate::body::read_limited(
                payload,
                limits.max_body_bytes,
                state.config.server.body_timeout,
            )
            .await;
            return Err(e.into());
        }
    };

    if !is_json(&req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = crate::body::read_limited(
        payload,
        limits.max_body_bytes,
        state.config.server.body_timeout,
    )
    .await?;
    let report =
        Report::from_json(&body).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;

    // The writer gives a batch up after the commit deadline; this also
    // bounds the wait for a place in its queue, so the sender is told to
    // retry rather than left hanging.
    let db = &state.config.database;
    let deadline = db.acquire_timeout + db.commit_deadline();
    let message_id = report.message_id.clone();
    // Unranked words stay out of the label: they are not ours to bound.
    let status = report.status.ranked().map_or("other", Status::as_str);
    if status == "other" {
        metrics::counter!("koostatus_reports_unknown_status_total", "channel" => channel.to_string())
            .increment(1);
    }
    let reported_channel = channel.clone();
    let recorded = tokio::time::timeout(
        deadline + Duration::from_millis(500),
        state.writer.write(Incoming {
            channel,
            report,
            received_at,
        }),
    )
    .await
    .map_err(|_| ApiError::unavailable("the database did not answer in time"))??
    .ok_or(ApiError::Conflict { message_id })?;

    let outcome = match (recorded.first_of_status, recorded.advanced) {
        (false, _) => "duplicate",
        (true, true) => "stored",
        (true, false) => "late",
    };
    // By channel: the failed-rate alert is per channel (channels are few).
    crate::metrics::count_report(reported_channel.as_str(), status, outcome);
    state.last_reports.record(&reported_channel);
    let mut response = HttpResponse::Ok().finish();
    response.extensions_mut().insert(Outcome(outcome));
    Ok(response)
}

/// `application/json` with any parameters, in any case; also `+json` types.
/// Read here rather than through a MIME parser, which costs the webhook
/// about as much as its own checks together.
fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    // Visible ASCII only (else not a media type), so slicing by bytes is safe.
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let ends_json = subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json");
    kind.eq_ignore_ascii_case("application") && (subtype.eq_ignore_ascii_case("json") || ends_json)
}
