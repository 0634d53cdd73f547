//! The `custos` binary's library: configuration, the HTTP API, the use cases behind it and
//! the admin CLI. Only this crate knows HTTP, JSON, the environment and the clock.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod behaviour;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod keyring;
pub mod leaks;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod oauth;
pub mod openapi;
pub mod policies;
pub mod reports;
pub mod reviews;
pub mod routes;
pub mod scan;
pub mod secrets;
pub mod serve;
pub mod service;
pub mod tasks;
pub mod ui;
pub mod verify;

pub use serve::{RunningServer, start, start_with_clock};
