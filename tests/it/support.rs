//! Test support: every test that touches storage runs on a fresh SQLite file and, when
//! `HUIYUAN_TEST_POSTGRES_URL` is set (CI sets it), on a fresh PostgreSQL database too.

use std::sync::Arc;

use huiyuan::app::App;
use huiyuan::config::Config;

/// A fresh database of one kind, dropped with the value (SQLite) or left for inspection (PostgreSQL,
/// uniquely named).
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// A fixed master key for tests (the vault itself is tested with random keys).
pub const TEST_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub fn postgres_base() -> Option<String> {
    std::env::var("HUIYUAN_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    TestDb { url, backend: "sqlite", _dir: Some(dir) }
}

/// Create a fresh PostgreSQL database on the server `HUIYUAN_TEST_POSTGRES_URL` names
/// (`postgres://user@host:port`, without a database).
pub async fn postgres_db() -> Option<TestDb> {
    use sqlx::Connection;
    let base = postgres_base()?.trim_end_matches('/').to_string();
    let name = format!("hy_test_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to HUIYUAN_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create database");
    Some(TestDb { url: format!("{base}/{name}"), backend: "postgres", _dir: None })
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The databases every storage test runs on.
pub async fn test_dbs() -> Vec<TestDb> {
    let mut v = vec![sqlite_db().await];
    match postgres_db().await {
        Some(pg) => v.push(pg),
        None => eprintln!("note: HUIYUAN_TEST_POSTGRES_URL is not set; PostgreSQL half skipped"),
    }
    v
}

pub fn config_for(db: &TestDb) -> Config {
    Config { database_url: db.url.clone(), secret_key: Some(TEST_KEY.into()), ..Config::default() }
}

pub async fn app_for(db: &TestDb) -> Arc<App> {
    Arc::new(App::start(config_for(db)).await.expect("app starts"))
}
