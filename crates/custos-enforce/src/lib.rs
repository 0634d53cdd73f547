//! Enforcement for Rust services governed by Custos.
//!
//! A service that agents call (a tool server, an internal API, a gateway) is an enforcement
//! point: before it acts on a request, it asks Custos whether the caller's credential may
//! perform that action on that resource, now. This crate is that question and its answer:
//!
//! - [`Client`] asks Custos's decision endpoint, `POST /access/v1/evaluation` (OpenID AuthZEN
//!   Authorization API 1.0), one [`Question`] at a time, and returns a [`Decision`] or an
//!   [`EnforceError`] with a stable [`code`](EnforceError::code). The client authenticates
//!   with the enforcement point's own Custos credential, which must hold `custos:evaluate`.
//! - [`EnforceLayer`] is a tower layer that asks for every request: a mapper says what the
//!   request does ([`Route`]), the agent's credential is the request's `Authorization: Bearer`
//!   header, and only an allowed request reaches the inner service, with the [`Decision`] in
//!   its extensions so a handler knows which NHI it serves.
//!
//! The layer fails closed: a request the mapper does not know, a request without a credential
//! and a request Custos could not decide on (unreachable, too slow, an unreadable answer, this
//! enforcement point refused) are all refused, and the inner service is not called. What each
//! refusal looks like is listed on [`Enforce`].
//!
//! # Example
//!
//! An axum service whose routes are governed as the service `crm`, with a public health check:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::routing::get;
//! use axum::{Extension, Router};
//! use custos_enforce::{Action, Client, Decision, EnforceLayer, Route};
//! use http::Method;
//! use http::request::Parts;
//!
//! /// What each request does, in terms of the grants `crm:read:customers/*` and so on.
//! fn route(parts: &Parts) -> Route {
//!     let path = parts.uri.path();
//!     if path == "/healthz" {
//!         return Route::Public;
//!     }
//!     match (&parts.method, path.strip_prefix("/customers/")) {
//!         (&Method::GET, Some(id)) => {
//!             Route::Governed(Action::new("crm", "read").on(format!("customers/{id}")))
//!         }
//!         (&Method::DELETE, Some(id)) => {
//!             Route::Governed(Action::new("crm", "delete").on(format!("customers/{id}")))
//!         }
//!         // Anything else is refused with 403 `action_unmapped`.
//!         _ => Route::Unmapped,
//!     }
//! }
//!
//! async fn customer(Extension(decision): Extension<Decision>) -> String {
//!     format!("served to {}", decision.nhi.unwrap_or_default())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // This service's own Custos credential: a static key of an NHI holding custos:evaluate.
//!     let credential = std::env::var("CUSTOS_PEP_CREDENTIAL")?;
//!     let client = Client::builder("https://custos.internal", credential)
//!         .timeout(Duration::from_secs(1))
//!         .build()?;
//!     let app = Router::new()
//!         .route("/customers/{id}", get(customer).delete(customer))
//!         .route("/healthz", get(|| async { "ok" }))
//!         .layer(EnforceLayer::new(client, route));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! Asking directly, without the layer:
//!
//! ```no_run
//! # async fn ask(client: &custos_enforce::Client, agent_token: &str)
//! #     -> Result<(), custos_enforce::EnforceError> {
//! use custos_enforce::Question;
//!
//! let question = Question::new(agent_token, "mail", "send").with_resource("outbox");
//! let decision = client.evaluate(&question).await?;
//! if !decision.allowed {
//!     println!("refused: {}", decision.reason);
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod layer;

pub use client::{Client, ClientBuilder, DEFAULT_TIMEOUT, Decision, EnforceError, Question};
pub use layer::{Action, Enforce, EnforceLayer, ResponseFuture, Route, reason};
