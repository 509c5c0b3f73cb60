//! One integration-test binary: every test drives the real store (SQLite and PostgreSQL) or the real
//! HTTP router bound to a port.

mod analytics;
mod api;
mod cli;
mod conformance;
mod coupons;
mod demo;
mod earning;
mod import;
mod ledger;
mod openapi;
mod reports;
mod rewards;
mod risk;
#[allow(dead_code)]
mod support;
mod webhooks;
