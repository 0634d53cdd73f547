//! Feature tests of the server over real HTTP on a real socket, against SQLite and
//! PostgreSQL, plus tests that run the `custos` binary itself.

mod support;

mod access;
mod audit;
mod behaviour;
mod cli;
mod cli_behaviour;
mod decisions;
mod discovery;
mod enforce;
mod inbox;
mod inventory;
mod lifecycle;
mod lifecycle_jobs;
mod negative;
mod nodes;
mod notifications;
mod oauth;
mod policies;
mod process;
mod reports;
mod scan;
mod secrets;
mod tasks;
mod web_ui;
