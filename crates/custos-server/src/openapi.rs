//! The OpenAPI 3.1 document, generated from the handlers. The shared error responses every
//! route can give (401, 403, 404, 413, 415, 422, …) are added here once rather than repeated
//! on each handler, and so are the rules that the shared extractors and the configuration
//! enforce (the `{id}` segment, the ETag format, optional bodies, the longest key lifetime).

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Required, ResponseBuilder};

use crate::api::ETAG_PATTERN;
use crate::error::{FieldErrorSchema, Problem};
use crate::extract::MAX_ID_LEN;
use crate::service::Limits;

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
        (name = "behaviour", description = "Behaviour baselines, findings and what departures bring"),
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

fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

fn problem(description: &str) -> utoipa::openapi::Response {
    problem_response(description).build()
}

/// The 401 response: a problem, and the challenge that says how to authenticate.
fn unauthenticated() -> utoipa::openapi::Response {
    problem_response("no token, or an unknown, malformed or revoked one")
        .header(
            "www-authenticate",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "`Bearer realm=\"custos\"`, with `error=\"invalid_token\"` for a bad token",
                ))
                .build(),
        )
        .build()
}

fn is_null_schema(schema: &RefOr<Schema>) -> bool {
    serde_json::to_value(schema).is_ok_and(|v| v == serde_json::json!({"type": "null"}))
}

/// An optional body (`Option<T>` in the handler) is read by `OptionalJsonBody`: it may be
/// left out, but a body that is sent is a `T`; a JSON `null` is refused like any other
/// non-object. So its schema is `T`, not `T` or `null`.
fn optional_body_is_never_null(body: &mut RequestBody) {
    if matches!(body.required, Some(Required::True)) {
        return;
    }
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else { continue };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let rest: Vec<_> = one_of
            .items
            .iter()
            .filter(|item| !is_null_schema(item))
            .cloned()
            .collect();
        if let [only] = rest.as_slice() {
            content.schema = Some(only.clone());
        }
    }
}

/// Every `{id}` segment is read by `IdPath`: 1 to `MAX_ID_LEN` characters, or 404.
fn id_segments(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if parameter.parameter_in != ParameterIn::Path {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
            object.min_length = Some(1);
            object.max_length = Some(MAX_ID_LEN);
        }
    }
}

/// Every ETag this server sends is a version in double quotes (`"3"`).
fn etag_headers(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        for (name, header) in response.headers.iter_mut() {
            if let (true, RefOr::T(header)) = (name.eq_ignore_ascii_case("etag"), header) {
                header.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(ETAG_PATTERN))
                        .into(),
                );
                header.description =
                    Some("the NHI's version, quoted; send it back as If-Match".into());
            }
        }
    }
}

/// The longest lifetime of a static key is configured (`static_key_max_age_seconds`).
fn key_lifetime(doc: &mut utoipa::openapi::OpenApi, limits: &Limits) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(issue))) = components.schemas.get_mut("IssueStaticKey") else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(ttl))) = issue.properties.get_mut("ttl_seconds") {
        ttl.maximum = Some(utoipa::Number::Int(
            isize::try_from(limits.static_key_max_age_seconds).unwrap_or(isize::MAX),
        ));
    }
}

fn add_problems(path: &str, operation: &mut Operation) {
    let public = operation.security.as_ref().is_some_and(|s| {
        s.iter()
            .all(|req| serde_json::to_value(req).is_ok_and(|v| v == serde_json::json!({})))
    });
    if !path.starts_with("/v1/") {
        return;
    }
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: fn(&str) -> utoipa::openapi::Response, description| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| response(description).into());
    };
    add(
        "400",
        problem,
        "malformed request: bad JSON, query parameter or header",
    );
    if !public {
        add("401", |_| unauthenticated(), "");
        add("403", problem, "the caller's role does not allow this");
    }
    if path.contains('{') {
        add(
            "404",
            problem,
            "no such record, or not visible to the caller",
        );
    }
    if has_body {
        add("413", problem, "the body is larger than 256 KiB");
        add("415", problem, "the body is not JSON");
        add(
            "422",
            problem,
            "the body is well-formed JSON but its content is refused",
        );
    }
    add("503", problem, "the store is unavailable");
}

/// Adds the shared problem responses and the shared rules to every operation.
pub fn finish(mut doc: utoipa::openapi::OpenApi, limits: &Limits) -> utoipa::openapi::OpenApi {
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
            id_segments(operation);
            etag_headers(operation);
            if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                optional_body_is_never_null(body);
            }
        }
    }
    key_lifetime(&mut doc, limits);
    doc
}
