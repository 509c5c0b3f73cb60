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

/// CI sets `HUIYUAN_REQUIRE_POSTGRES=1` so a missing PostgreSQL fails the run instead of skipping.
pub fn postgres_required() -> bool {
    std::env::var("HUIYUAN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
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
    let mut conn =
        sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to HUIYUAN_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
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
        None if postgres_required() => panic!("HUIYUAN_REQUIRE_POSTGRES is set but HUIYUAN_TEST_POSTGRES_URL is not"),
        None => eprintln!("note: HUIYUAN_TEST_POSTGRES_URL is not set; PostgreSQL half skipped"),
    }
    v
}

pub fn config_for(db: &TestDb) -> Config {
    Config { database_url: db.url.clone(), secret_key: Some(TEST_KEY.into()), ..Config::default() }
}

/// The latest moment at or before `t` that is not the example rule set's 会员日 (Wednesday in the shop's
/// Asia/Shanghai time), so a test that asserts points earned "now" does not double one day a week.
pub fn off_member_day(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let mut t = t;
    while t.with_timezone(&chrono_tz::Asia::Shanghai).weekday() == chrono::Weekday::Wed {
        t -= chrono::Duration::days(1);
    }
    t
}

pub async fn app_for(db: &TestDb) -> Arc<App> {
    Arc::new(App::start(config_for(db)).await.expect("app starts"))
}

/// The real router served on an ephemeral port, with a key for every role.
pub struct TestServer {
    pub base: String,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    pub keys: std::collections::HashMap<huiyuan::security::Role, String>,
    pub db: TestDb,
}

impl TestServer {
    pub async fn spawn(db: TestDb) -> TestServer {
        let app = app_for(&db).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = huiyuan::http::router(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let mut keys = std::collections::HashMap::new();
        for role in huiyuan::security::Role::ALL {
            let (key, _) = app.create_key(role, "test").await.expect("key");
            keys.insert(role, key);
        }
        TestServer { base, app, client: reqwest::Client::new(), keys, db }
    }

    pub fn key(&self, role: huiyuan::security::Role) -> &str {
        &self.keys[&role]
    }

    pub fn admin(&self) -> &str {
        self.key(huiyuan::security::Role::Admin)
    }

    /// A request with the given role's key.
    pub fn req(&self, role: huiyuan::security::Role, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(self.key(role))
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .req(huiyuan::security::Role::Admin, reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.req(huiyuan::security::Role::Admin, reqwest::Method::GET, path).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// A server on each test database.
pub async fn servers() -> Vec<TestServer> {
    let mut v = Vec::new();
    for db in test_dbs().await {
        v.push(TestServer::spawn(db).await);
    }
    v
}
