//! Request extractors that turn every malformed input into a problem document with a stable
//! code, instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, HeaderName, StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body accepted on the API.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The longest `{id}` path segment, in characters; longer ones name nothing (404).
pub const MAX_ID_LEN: usize = 128;

/// A JSON request body: `application/json` (or any `+json` type), at most
/// [`MAX_BODY_BYTES`], and deserialised strictly: unknown fields are refused by the types.
pub struct JsonBody<T>(pub T);

/// The media type a header names (`Content-Type`, or the first of `Accept`), lowercased and
/// without its parameters; "" if the header is missing or not text.
pub fn media_type(headers: &HeaderMap, name: HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split([';', ','])
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type (as [`media_type`] gives it) is JSON: `application/json` or any
/// `application/…+json`.
pub fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn is_json_request(req: &Request) -> bool {
    is_json(&media_type(req.headers(), header::CONTENT_TYPE))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be JSON (content-type: application/json)",
    )
}

async fn read_body(req: Request) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
            )
        })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_request(&req) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(req).await?;
        parse_json_object(&bytes).map(JsonBody)
    }
}

/// A JSON request body that may be left out: an empty body reads as `T::default()`. A body
/// that is sent follows the rules of [`JsonBody`]; `null` is not the same as no body.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json_request(&req);
        let bytes = read_body(req).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse_json_object(&bytes).map(OptionalJsonBody)
    }
}

fn malformed_json(error: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        format!("the request body is not valid JSON: {error}"),
    )
}

/// Parses a whole body as one JSON value of type `T`: a body that is not JSON (including
/// anything after the value) is 400 `malformed_json`; JSON of the wrong shape is 422
/// `invalid_body`, naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // Whether the body is JSON at all is decided on the bytes alone: serde_json reports
        // some wrong types as syntax errors (an enum given `null` or a number "expected
        // value"), and a type error may come before a syntax error further on.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return malformed_json(&syntax);
        }
        let field = if path == "." { "body".to_owned() } else { path };
        let mut errors = custos_core::validate::ValidationErrors::default();
        errors.push(field, inner.to_string());
        ApiError {
            code: "invalid_body",
            ..ApiError::validation(errors)
        }
    })?;
    deserializer.end().map_err(|e| malformed_json(&e))?;
    if holds_nul_escape(bytes) {
        let mut errors = custos_core::validate::ValidationErrors::default();
        errors.push(
            "body",
            "strings may not contain the NUL character (\\u0000)",
        );
        return Err(ApiError {
            code: "invalid_body",
            ..ApiError::validation(errors)
        });
    }
    Ok(value)
}

/// Whether valid JSON text holds a string with a NUL character. JSON can only write one as
/// the escape `\u0000` (a raw control character is not valid JSON); it is one when an odd
/// number of backslashes precede the `u`, since `\\` is an escaped backslash. Nothing Custos
/// stores can hold a NUL (PostgreSQL refuses it in text), so every store refuses it alike.
fn holds_nul_escape(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(found) = json[from..].windows(5).position(|w| w == b"u0000") {
        let at = from + found;
        let backslashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 5;
    }
    false
}

/// A request body, which is always a JSON object here. serde reads a struct from an array of
/// its fields in order too (`[null, null]`); that is not a shape any route documents, so it
/// is refused like any other wrong type.
fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError {
            code: "invalid_body",
            ..ApiError::validation(custos_core::validate::ValidationErrors::single(
                "body",
                "must be a JSON object",
            ))
        });
    }
    parse_json(bytes)
}

/// The `{id}` segment of a path.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        // Characters, not bytes: a team is named by up to 100 characters of any script.
        if id.is_empty() || id.chars().count() > MAX_ID_LEN {
            return Err(ApiError::not_found("resource"));
        }
        Ok(IdPath(id))
    }
}

/// The query string as ordered pairs, for routes that validate their parameters themselves
/// (repeated parameters, unknown parameters refused by name).
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl QueryPairs {
    /// Refuses any parameter not in `allowed`, so a typo never silently widens a listing.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::bad_request(
                "unknown_parameter",
                format!(
                    "unknown query parameter {k:?}; expected one of {}",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The single value of `name`; given twice is an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("{name} may be given only once"),
            ));
        }
        Ok(first)
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::holds_nul_escape;

    /// Text rich in what the scan must tell apart: runs of backslashes, `u0000` written out,
    /// real NULs, quotes, and any other character.
    fn tricky_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\\".to_owned()),
                Just("u0000".to_owned()),
                Just("\0".to_owned()),
                Just("\"".to_owned()),
                Just("u00".to_owned()),
                any::<char>().prop_map(String::from),
            ],
            0..16,
        )
        .prop_map(|atoms| atoms.concat())
    }

    proptest! {
        /// Whatever strings a JSON object holds, as keys or values, the scan of its text finds
        /// a NUL exactly when one of them has one.
        #[test]
        fn finds_a_nul_exactly_when_a_string_holds_one(
            fields in proptest::collection::btree_map(tricky_text(), tricky_text(), 0..4),
        ) {
            let json = serde_json::to_vec(&fields).unwrap();
            let holds = fields.iter().any(|(k, v)| k.contains('\0') || v.contains('\0'));
            prop_assert_eq!(holds_nul_escape(&json), holds);
        }
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        assert!(holds_nul_escape(br#"{"a":"\u0000"}"#));
        assert!(!holds_nul_escape(br#"{"a":"\\u0000"}"#));
        assert!(holds_nul_escape(br#"{"a":"\\\u0000"}"#));
        assert!(!holds_nul_escape(br#"{"a":"u0000"}"#));
    }
}
