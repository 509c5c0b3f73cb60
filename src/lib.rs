//! Huiyuan (会员): a self-hosted membership, loyalty and customer-behaviour system for e-commerce brands.
//!
//! Domain modules (`members`, `commerce`, `events`, `security`) are pure; `store` persists them on SQLite
//! or PostgreSQL; `app` holds the use cases; `http`, `cli`, `import` and `demo` are the edges.
//! See ARCHITECTURE.md for the map.

pub mod analytics;
pub mod app;
pub mod cli;
pub mod commerce;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod http;
pub mod import;
pub mod loyalty;
pub mod members;
pub mod notify;
pub mod security;
pub mod store;
