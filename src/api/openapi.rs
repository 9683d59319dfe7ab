//! The read API's part of the OpenAPI 3 document, generated from the
//! handlers' annotations and the response types, and the route that serves
//! the whole document (startup.rs composes it from every layer's part).

use actix_web::HttpResponse;
use actix_web::web::{self, Bytes};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::model;

/// The read API's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        super::messages::get_message,
        super::messages::get_message_named_lookup,
        super::messages::lookup,
        super::messages::list,
        super::registration::register,
        super::changes::changes,
        super::events::events,
        super::events::create_ticket,
        super::stats::stats,
        super::export::export,
        super::channels::channels,
    ),
    components(schemas(
        model::Message,
        model::MessageDetail,
        model::HistoryEntry,
        model::LookupRequest,
        model::LookupResponse,
        model::MessagePage,
        super::registration::RegisterRequest,
        super::registration::NewMessage,
        super::registration::RegisterResponse,
        crate::live::ChangeEntry,
        model::ChangePage,
        super::events::Ticket,
        super::stats::Stats,
        super::channels::Channel,
        super::channels::ChannelList,
        super::stats::StatsBucket,
        super::stats::StatsTotal,
        super::stats::TimeToRead,
        ErrorBody,
        crate::domain::Status,
    )),
    modifiers(&Security)
)]
pub struct ReadApi;

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
    }
}

/// The whole document, serialised once.
pub struct Document(Bytes);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Document {
        Document(
            serde_json::to_vec(doc)
                .expect("the document serialises")
                .into(),
        )
    }
}

pub async fn document(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}
