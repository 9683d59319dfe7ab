//! CORS for the read API (SPEC §8), so that agent desktops served from
//! their own origin can call it. Only `/api/v1/` is wrapped: the webhook and
//! `/metrics` never answer CORS.
//!
//! Hand-written rather than actix-cors: the contract wants 204 for a
//! preflight and, for an origin not on the list, the ordinary answer without
//! CORS headers, where actix-cors 0.7 answers 200 and refuses the request.

use std::collections::HashSet;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::config::CorsConfig;

const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";

pub struct Cors {
    origins: HashSet<String>,
    max_age: HeaderValue,
}

impl Cors {
    /// None when no origin is allowed: then no CORS header is ever sent.
    pub fn new(cfg: &CorsConfig) -> Option<Cors> {
        (!cfg.allowed_origins.is_empty()).then(|| Cors {
            origins: cfg.allowed_origins.iter().cloned().collect(),
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        })
    }

    /// The request's Origin, when it is allowed.
    fn allowed(&self, req: &actix_web::HttpRequest) -> Option<HeaderValue> {
        let origin = req.headers().get(header::ORIGIN)?;
        self.origins
            .contains(origin.to_str().ok()?)
            .then(|| origin.clone())
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(cors) = req.app_data::<web::Data<Cors>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let origin = cors.allowed(req.request());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(origin)) = (preflight, &origin) {
        let response = HttpResponse::build(StatusCode::NO_CONTENT)
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone()))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(response));
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    let headers = response.headers_mut();
    // The answer depends on Origin whether or not this one is allowed.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    Ok(response)
}
