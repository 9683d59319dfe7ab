//! The OpenAPI 3 document of the webhook and the read API, generated from
//! the handlers' annotations and the response types.

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::model;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "koostatus",
        description = "KooMessage WhatsApp delivery reports, kept in PostgreSQL, and a read API for agent desktops."
    ),
    paths(
        crate::ingest::report,
        super::messages::get_message,
        super::messages::get_message_named_lookup,
        super::messages::lookup,
        super::messages::list,
        super::changes::changes,
        super::events::events,
        super::events::create_ticket,
        crate::startup::healthz,
        crate::startup::readyz,
        crate::metrics::render,
    ),
    components(schemas(
        model::Message,
        model::MessageDetail,
        model::HistoryEntry,
        model::LookupRequest,
        model::LookupResponse,
        model::MessagePage,
        model::ChangeEntry,
        model::ChangePage,
        super::events::Ticket,
        model::ErrorBody,
        model::ReportBody,
        crate::domain::Status,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // EventSource cannot send headers: /events also takes a ticket.
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("ticket"))),
        );
        // KooMessage sends the bare webhook password, no scheme.
        components.add_security_scheme(
            "webhook_password",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))),
        );
    }
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
