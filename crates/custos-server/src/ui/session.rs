//! Web UI sessions: sign-in with an operator token, the session cookie, and the CSRF checks
//! every state-changing form goes through.

use axum::extract::{FromRequestParts, OriginalUri, Query, RawForm, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_core::{Actor, EventKind, Operator};
use custos_store::UiSession;
use serde::Deserialize;

use super::{UiError, pages, render, see_other};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::secrets::hashes_equal;
use crate::service::AppState;

/// The session cookie: HttpOnly, SameSite=Strict, scoped to `/ui`.
pub const SESSION_COOKIE: &str = "custos_session";
/// The sign-in form's own CSRF cookie (double submit): there is no session to bind it to yet.
const LOGIN_COOKIE: &str = "custos_login";
/// How long a session lasts; signing out ends it sooner.
const SESSION_SECONDS: i64 = 8 * 3600;
/// How long a sign-in form stays usable.
const LOGIN_FORM_SECONDS: i64 = 600;

/// A signed-in operator, as a page sees it.
pub struct Session {
    pub principal: Principal,
    pub csrf_token: String,
}

impl Session {
    pub fn operator(&self) -> &Operator {
        match &self.principal {
            Principal::Operator(op) => op,
            // Sessions are only ever started for operators (see `login`).
            Principal::Nhi { .. } => unreachable!("a web UI session belongs to an operator"),
        }
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for one of our cookies; `Secure` when the server is reached over HTTPS.
fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let secure = if state.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Resolves the session cookie to a live session of an active operator.
async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, UiError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = state.keys.secret_hash(id);
    let Some(session) = state.store.get_ui_session(&hash).await? else {
        return Ok(None);
    };
    if !hashes_equal(&session.id_hash, &hash) || !session.is_live(state.now()) {
        return Ok(None);
    }
    match state.store.get_operator(&session.operator_id).await? {
        Some(op) if op.is_active() => Ok(Some(Session {
            principal: Principal::Operator(op),
            csrf_token: session.csrf_token,
        })),
        // A revoked operator's sessions end with its token.
        _ => Ok(None),
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        match current(state, &parts.headers).await? {
            Some(session) => Ok(session),
            None if parts.method == axum::http::Method::GET => {
                let next = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map(|uri| uri.0.to_string())
                    .unwrap_or_else(|| parts.uri.to_string());
                Err(UiError::SignIn { next })
            }
            None => Err(
                ApiError::forbidden("sign in first: this form needs a web UI session")
                    .with_code("not_signed_in")
                    .into(),
            ),
        }
    }
}

/// A POST's form fields, after the cross-origin and CSRF checks.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Refuses a POST a browser says came from elsewhere: `Sec-Fetch-Site` other than
/// `same-origin` (or `none`, typed by the user), or an `Origin` that is not this host.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused =
        || ApiError::forbidden("this form was sent from another site").with_code("csrf_failed");
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(refused());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if host.is_none() || origin_host != host {
            return Err(refused());
        }
    }
    Ok(())
}

/// Parses a form body and checks that it is this session's (or this sign-in form's) own.
pub fn checked_form(headers: &HeaderMap, body: &[u8], expected: &str) -> Result<Form, ApiError> {
    same_origin(headers)?;
    let fields: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if fields
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "form fields may not contain the NUL character",
        ));
    }
    let form = Form(fields);
    let given = form.get("csrf").unwrap_or("");
    if expected.is_empty() || !hashes_equal(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::forbidden(
            "the form's CSRF token is missing or wrong; reload the page",
        )
        .with_code("csrf_failed"));
    }
    Ok(form)
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path of our own UI may be gone back to after signing in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with("/ui/")
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => "/ui/approvals".to_owned(),
    }
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    next: String,
    error: Option<String>,
) -> Response {
    let csrf = random_token();
    let page = pages::LoginPage {
        csrf: csrf.clone(),
        next,
        error,
    };
    let mut response = render(status, &page);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &csrf, "/ui/login", LOGIN_FORM_SECONDS),
    );
    response
}

pub async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    login_form(
        &state,
        StatusCode::OK,
        safe_next(query.next.as_deref()),
        None,
    )
}

/// `POST /ui/login`: an operator token in, a session cookie out. NHI credentials never sign in.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("").to_owned();
    let form = match checked_form(&headers, &body, &expected) {
        Ok(form) => form,
        Err(error) => return UiError::Problem(error).into_response(),
    };
    let next = safe_next(form.get("next"));
    let token = form.get("token").unwrap_or("").trim();
    let refused = |detail: &str| {
        login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            next.clone(),
            Some(detail.to_owned()),
        )
    };
    if token.is_empty() {
        return refused("enter an operator token");
    }
    let operator = match Principal::authenticate(&state, token).await {
        Ok(Principal::Operator(op)) => op,
        Ok(Principal::Nhi { .. }) => {
            return refused("that is an nhi's credential; only operators sign in here");
        }
        Err(error) if error.status.is_server_error() => {
            return UiError::Problem(error).into_response();
        }
        Err(_) => return refused("that token is unknown or has been revoked"),
    };
    let id = random_token();
    let now = state.now();
    let session = UiSession {
        id_hash: state.keys.secret_hash(&id).to_vec(),
        operator_id: operator.id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now.plus_seconds(SESSION_SECONDS),
        ended_at: None,
    };
    let event = state
        .event(
            EventKind::OperatorSignedIn,
            Actor::Operator(operator.id.clone()),
            format!("operator:{}", operator.id),
        )
        .with("via", "web_ui");
    if let Err(error) = state.store.create_ui_session(&session, &event).await {
        return UiError::from(error).into_response();
    }
    let mut response = see_other(&next);
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &id, "/ui", SESSION_SECONDS),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, "", "/ui/login", 0),
    );
    response
}

/// `POST /ui/logout`: ends the session in the store, so the cookie is worthless even if kept.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    checked_form(&headers, &body, &session.csrf_token)?;
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        let operator = session.operator();
        let event = state
            .event(
                EventKind::OperatorSignedOut,
                Actor::Operator(operator.id.clone()),
                format!("operator:{}", operator.id),
            )
            .with("via", "web_ui");
        state
            .store
            .end_ui_session(&state.keys.secret_hash(id), state.now(), &event)
            .await?;
    }
    let mut response = see_other("/ui/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", "/ui", 0),
    );
    Ok(response.into_response())
}
