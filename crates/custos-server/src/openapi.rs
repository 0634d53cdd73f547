//! The OpenAPI 3.1 document, generated from the handlers. The shared error responses every
//! route can give (401, 403, 404, 413, 415, 422, …) are added here once rather than repeated
//! on each handler.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

use crate::error::{FieldErrorSchema, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custos",
        description = "Governance of non-human identities: inventory, credentials, scoped and \
                       continuous authorization, audit and human review.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(Problem, FieldErrorSchema)),
    security(("bearer" = [])),
    tags(
        (name = "plumbing", description = "Health, readiness and metrics"),
        (name = "operators", description = "People and their tokens"),
        (name = "teams", description = "Owner teams"),
        (name = "nhis", description = "The inventory of non-human identities"),
        (name = "credentials", description = "Static keys"),
        (name = "audit", description = "The event trail"),
    )
)]
struct Base;

pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (custos_op_…) or an NHI static key (custos_sk_…)",
                    ))
                    .build(),
            ),
        );
    }
    doc
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn add_problems(path: &str, operation: &mut Operation) {
    let public = operation.security.as_ref().is_some_and(|s| {
        s.iter()
            .all(|req| serde_json::to_value(req).is_ok_and(|v| v == serde_json::json!({})))
    });
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description).into());
    };
    if !path.starts_with("/v1/") {
        return;
    }
    add(
        "400",
        "malformed request: bad JSON, query parameter or header",
    );
    if !public {
        add("401", "no token, or an unknown, malformed or revoked one");
        add("403", "the caller's role does not allow this");
    }
    if path.contains('{') {
        add("404", "no such record, or not visible to the caller");
    }
    if operation.request_body.is_some() {
        add("413", "the body is larger than 256 KiB");
        add("415", "the body is not JSON");
        add(
            "422",
            "the body is well-formed JSON but its content is refused",
        );
    }
    add("503", "the store is unavailable");
}

/// Adds the shared problem responses to every operation.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_problems(path, operation);
        }
    }
    doc
}
