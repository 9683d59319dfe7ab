//! The console for supervisors at `/console/` (SPEC §10): one page, its
//! script and its style, compiled into the binary. The page signs in with
//! an API token it keeps in memory only (no cookie, no URL, no storage) and
//! calls the read API of the same origin.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(redirect))
        .route("/console/", web::get().to(index))
        .route("/console/console.js", web::get().to(script))
        .route("/console/console.css", web::get().to(style));
}

async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Nothing but this origin: no CDN, no inline script, no framing.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}
