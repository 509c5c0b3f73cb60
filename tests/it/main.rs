//! One integration-test binary: every test drives the real store (SQLite and PostgreSQL) or the real
//! HTTP router bound to a port.

#[allow(dead_code)]
mod support;
mod import;
