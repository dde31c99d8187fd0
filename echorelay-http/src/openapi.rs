//! The OpenAPI 3.1 document, generated from the handlers' annotations by
//! utoipa: the router and the document are built from the same
//! `routes!` lists ([`crate::router`]), so a route cannot be served
//! without being documented. Served at `GET /openapi.json`.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every error answer: a stable code and a message for people (never a
/// value from the request).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `unauthenticated`, `forbidden`, `invalid_field`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// Answers every authenticated route can give.
#[derive(IntoResponses)]
pub enum AuthErrors {
    /// Missing, malformed, unknown, revoked or expired credential (one
    /// generic answer; `WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Denied: unknown project, another project, a role without this
    /// surface, a missing CSRF token on a cookie write, or a step-up needed
    /// (`reauthentication_required`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The store could not be reached; nothing was authenticated.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Answers to a request body that is not right.
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// Malformed JSON, an unknown, missing or invalid field (named), a bad
    /// id in the path.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body is larger than 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Well-formed but refused by the rules (a label too long, a role
    /// above the caller's, a bad URL, …).
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// A query string that is not as documented.
#[derive(IntoResponses)]
pub enum QueryErrors {
    /// A parameter that does not parse, is unknown, or is out of range
    /// (`invalid_query`; nothing is clamped).
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// The project's tree is full.
#[derive(IntoResponses)]
pub enum TreeFull {
    /// The project already holds 10000 lines, endpoints and targets
    /// together (`limit_reached`): delete some first.
    #[response(status = 409)]
    LimitReached(ErrorBody),
}

/// The record does not exist (or is not in this project).
#[derive(IntoResponses)]
pub enum NotFound {
    /// Not found.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The change conflicts with the stored state.
#[derive(IntoResponses)]
pub enum Conflict {
    /// Already revoked or rotated, changed concurrently, the last owner,
    /// or already exists.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// The document's frame: info, tags and the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "echorelay",
        description = "The echorelay HTTP API: API keys, tenant configuration, members, billing events, the audit log and accounts. Project routes take an API key (`Authorization: Bearer er_…`) or a session cookie; a cookie-authenticated write also needs `X-CSRF-Token`."
    ),
    modifiers(&SecuritySchemes),
    paths(crate::mcp::documented),
    // Path parameters refer to these; nothing else registers them.
    components(schemas(
        ErrorBody,
        echorelay::core::config::Slug,
        echorelay::core::ids::KeyId,
        echorelay::core::ids::LineId,
        echorelay::core::ids::EndpointId,
        echorelay::core::ids::TargetId,
        echorelay::core::ids::UserId,
        echorelay::core::ids::SessionId,
        echorelay::core::ids::DeviceId,
        echorelay::core::audit::UserEventCursor
    )),
    tags(
        (name = "config", description = "Lines, endpoints and targets (secrets masked on every read)"),
        (name = "keys", description = "API keys"),
        (name = "relay", description = "The inbound door: messages POSTed to an endpoint, relayed to every target of its line"),
        (name = "operations", description = "What the relay did: messages, deliveries and attempts, dead letters and their redrive"),
        (name = "project", description = "Members, billing events and the audit log"),
        (name = "auth", description = "Login and sessions"),
        (name = "me", description = "The signed-in account"),
        (name = "meta", description = "The API's own documents"),
        (name = "mcp", description = "The MCP read API (list_projects, read_config, list_keys, list_messages, read_message, recent_audit_events)")
    )
)]
pub struct ApiDoc;

/// Adds the two ways to authenticate.
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("er_live_… / er_test_…")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::cookies::SESSION))),
        );
    }
}

/// A JSON `null` (the other choice's field, sent empty).
fn null() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

/// A string field with its description (for the hand-written body schemas).
pub(crate) fn described_string(description: &str) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
        .build()
}

/// An object with the `common` fields (`required` among them) and exactly
/// one of the two `choices` (the other absent or `null`), nothing else:
/// a body like `{"password": …}` or `{"code": …}`, never both.
pub(crate) fn exactly_one_of(
    description: &str,
    common: &[(&str, utoipa::openapi::schema::Object)],
    required: &[&str],
    choices: [(&str, utoipa::openapi::schema::Object); 2],
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder};
    let mut one_of = OneOfBuilder::new().description(Some(description));
    for (i, (name, schema)) in choices.iter().enumerate() {
        let (other, _) = &choices[1 - i];
        let mut o = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .property(*name, schema.clone())
            .required(*name)
            .property(*other, null())
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for (field, schema) in common {
            o = o.property(*field, schema.clone());
        }
        for field in required {
            o = o.required(*field);
        }
        one_of = one_of.item(o.build());
    }
    utoipa::openapi::schema::Schema::OneOf(one_of.build()).into()
}

/// A non-zero amount in minor units.
pub(crate) fn nonzero_amount() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let int = || {
        ObjectBuilder::new().schema_type(Type::Integer).format(Some(
            utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::Int64,
            ),
        ))
    };
    OneOfBuilder::new()
        .description(Some("Amount in minor units, non-zero (negative: a debit)"))
        .item(int().minimum(Some(i64::MIN)).maximum(Some(-1)).build())
        .item(int().minimum(Some(1)).maximum(Some(i64::MAX)).build())
        .build()
        .into()
}

/// The request bodies that are enums of objects: serde refuses any field a
/// variant does not name (`deny_unknown_fields`), which utoipa states for
/// structs but not for enum variants.
const CLOSED_ENUMS: [&str; 2] = ["AuthBody", "BillingBody"];

/// The inbound door takes an empty body too (a webhook may carry none):
/// utoipa marks every non-`Option` body required, so the document is
/// corrected here.
pub(crate) fn optional_inbound_body(doc: &mut utoipa::openapi::OpenApi) {
    if let Some(utoipa::openapi::RefOr::T(body)) = doc
        .paths
        .paths
        .get_mut("/v1/in/{endpoint_id}")
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
}

/// States `additionalProperties: false` on every variant of the
/// [`CLOSED_ENUMS`] (run on the finished document: the components come
/// from the routes).
pub(crate) fn close_variants(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let Some(components) = api.components.as_mut() else {
        return;
    };
    for name in CLOSED_ENUMS {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) {
            for item in &mut one_of.items {
                if let RefOr::T(Schema::Object(o)) = item {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}
