//! The store conformance suite: every test runs against SQLite (a fresh file) and against
//! PostgreSQL (a fresh schema in `CUSTOS_TEST_DATABASE_URL`, default the local server). The
//! PostgreSQL half fails, never skips, when the server is unreachable.

mod support;

mod behaviour;
mod conformance;
mod discovery;
mod feed;
mod lifecycle;
mod reports;
mod upgrade;
