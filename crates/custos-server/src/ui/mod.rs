//! The web UI at `/ui`: server-rendered pages (askama templates, htmx for partial updates)
//! over the same use-case functions the API handlers call. Every page works without
//! JavaScript; htmx and the keyboard shortcuts only make it quicker.
//!
//! Sign-in takes an operator token once and starts a server-side session: the browser holds a
//! random session id in an HttpOnly, SameSite=Strict cookie scoped to `/ui`, and the store keeps
//! only its keyed hash. Every state-changing form carries the session's CSRF token, and a POST
//! that a browser marks as coming from another origin is refused before the token is looked at.

mod pages;
mod session;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::service::AppState;

pub use session::SESSION_COOKIE;

/// The `/ui` pages and their static files.
pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/ui/approvals") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/approvals", get(pages::inbox))
        .route("/approvals/{id}", get(pages::approval))
        .route("/approvals/{id}/approve", post(pages::approve))
        .route("/approvals/{id}/deny", post(pages::deny))
        .route("/nhis", get(pages::inventory))
        .route("/nhis/{id}", get(pages::nhi))
        .route("/nhis/{id}/suspend", post(pages::suspend))
        .route("/nhis/{id}/resume", post(pages::resume))
        .route("/findings", get(pages::findings))
        .route("/findings/{id}", get(pages::finding))
        .route("/findings/{id}/{action}", post(pages::resolve_finding))
        .fallback(|| async { UiError::not_found("page") })
        .layer(axum::middleware::from_fn(page_headers))
        .with_state(state);
    let assets = Router::new().route("/ui/static/{file}", get(asset));
    Router::new().nest("/ui", pages).merge(assets)
}

/// Headers on every page: a strict content security policy (our own scripts and styles only,
/// no inline code, no framing, forms post only here), and no caching of what a reviewer saw.
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Our stylesheet, keyboard shortcuts and htmx (2.0.11, vendored: no build step, no CDN).
async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static str, &'static str) = match file.as_str() {
        "custos.css" => (
            include_str!("../../static/custos.css"),
            "text/css; charset=utf-8",
        ),
        "custos.js" => (
            include_str!("../../static/custos.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.min.js" => (
            include_str!("../../static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return UiError::not_found("file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// What a page shows instead of itself: the sign-in form, or an error page with the same
/// stable code the API would give.
#[derive(Debug)]
pub enum UiError {
    /// Not signed in (or the session ended): to the sign-in page, then back to `next`.
    SignIn {
        next: String,
    },
    Problem(ApiError),
}

impl UiError {
    fn not_found(what: &str) -> Self {
        UiError::Problem(ApiError::not_found(what))
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        UiError::Problem(error)
    }
}

impl From<custos_store::StoreError> for UiError {
    fn from(error: custos_store::StoreError) -> Self {
        UiError::Problem(error.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn { next } => {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next)
                    .finish();
                Redirect::to(&format!("/ui/login?{query}")).into_response()
            }
            UiError::Problem(error) => {
                let page = pages::ErrorPage {
                    status: error.status.as_u16(),
                    code: error.code,
                    detail: error.detail,
                };
                render(error.status, &page)
            }
        }
    }
}

/// A rendered template as an HTML response; a template that cannot render (a bug) is a 500
/// page with a code, never a panic.
fn render(status: StatusCode, template: &impl askama::Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a web UI template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>error</title><p>the page could not be shown (code template_failed)</p>".to_owned()),
            )
                .into_response()
        }
    }
}

/// Where a form goes after it succeeded: a 303, so that reloading does not post it again.
fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}
