//! The real `huiyuan` binary driven as a user would: keys, imports (with the rejected rows it reports), the
//! demo, and `serve` restarted on the same database. Every command runs in a fresh working directory with
//! one master key, on SQLite and (when `HUIYUAN_TEST_POSTGRES_URL` is set) PostgreSQL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huiyuan::store::Stats;
use serde_json::{Value, json};

use crate::support::{self, TEST_KEY};

/// What one run of the binary did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ok: {}\n--- stdout\n{}--- stderr\n{}", self.ok, self.stdout, self.stderr)
    }
}

impl Run {
    /// A count from the import summary (`imported      3`).
    fn count(&self, label: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(label)?.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` count in the summary:\n{self}"))
    }

    /// A failure must be exactly one line, `error: …`.
    fn assert_one_line_error(&self, containing: &str) {
        assert!(!self.ok, "should fail:\n{self}");
        let err = self.stderr.trim();
        assert!(err.starts_with("error: ") && err.lines().count() == 1 && err.contains(containing), "{self}");
    }
}

/// The binary in `dir`, with the shared test key and quiet logs, and no outside `HUIYUAN_*` setting.
fn command(dir: &Path, args: &[&str], secret_key: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_huiyuan"));
    c.args(args).current_dir(dir).env("HUIYUAN_LOG", "warn");
    for var in ["HUIYUAN_DATABASE_URL", "HUIYUAN_KEY_FILE", "HUIYUAN_ADMIN_KEY", "HUIYUAN_PORT", "HUIYUAN_BIND"] {
        c.env_remove(var);
    }
    if secret_key {
        c.env("HUIYUAN_SECRET_KEY", TEST_KEY);
    } else {
        c.env_remove("HUIYUAN_SECRET_KEY");
    }
    c
}

fn run_with(dir: &Path, args: &[&str], secret_key: bool) -> Run {
    let out = command(dir, args, secret_key).stdin(Stdio::null()).output().expect("run huiyuan");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(dir: &Path, args: &[&str]) -> Run {
    run_with(dir, args, true)
}

/// Bytes in a SQLite database's write-ahead log (none for PostgreSQL or a missing log).
fn wal_len(url: &str) -> u64 {
    url.strip_prefix("sqlite://").and_then(|path| std::fs::metadata(format!("{path}-wal")).ok()).map_or(0, |m| m.len())
}

fn stats(dir: &Path, db: &str) -> Stats {
    let r = run(dir, &["stats", "--json", "--db", db]);
    assert!(r.ok, "{r}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("stats JSON: {e}\n{r}"))
}

#[tokio::test]
async fn keys_are_printed_once_and_roles_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    for db in support::test_dbs().await {
        let b = db.backend;
        let r = run(dir.path(), &["migrate", "--db", &db.url]);
        assert!(r.ok, "{b}: {r}");
        let r = run(dir.path(), &["keys", "create", "--role", "analyst", "--db", &db.url]);
        assert!(r.ok, "{b}: {r}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert!(lines.len() == 1 && lines[0].starts_with("hy_") && lines[0].len() > 40, "{b}: {r}");
        let r = run(dir.path(), &["keys", "create", "--role", "wizard", "--db", &db.url]);
        assert!(!r.ok && r.stdout.is_empty(), "{b}: {r}");
        assert!(
            r.stderr.contains("wizard") && r.stderr.contains("admin, operator, analyst or integration"),
            "{b}: {r}"
        );
    }
}

#[tokio::test]
async fn generic_orders_import_names_the_rejected_lines_and_imports_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // W2 has a bad quantity on its second row (line 5), so both its rows (lines 4 and 5) are rejected.
    std::fs::write(
        dir.path().join("orders.csv"),
        "customer_id,order_id,order_time,amount,sku,quantity,unit_price,category,brand,channel\n\
         c1,W1,2024-05-01 08:00:00,700,A,2,200,美妆/口红,花西子,web\n\
         c1,W1,2024-05-01 08:00:00,700,B,1,300,美妆/口红,花西子,web\n\
         c2,W2,2024-05-02 09:00:00,,A,1,200,,,web\n\
         c2,W2,2024-05-02 09:00:00,,B,two,300,,,web\n\
         ,W3,2024-05-03 10:00:00,,C,3,100,,,tmall\n\
         c1,W4,2024-05-04T11:00:00Z,200,A,1,200,,,web\n",
    )
    .expect("write");
    for db in support::test_dbs().await {
        let b = db.backend;
        let rejects = format!("rejects-{b}.csv");
        let args = ["import", "orders", "orders.csv", "--mapping", "generic", "--rejects", &rejects, "--db", &db.url];
        let r = run(dir.path(), &args);
        assert!(r.ok, "{b}: {r}");
        let counts = ["rows read", "imported", "duplicates", "rejected"].map(|l| r.count(l));
        assert_eq!(counts, [6, 3, 0, 2], "{b}: {r}");
        assert!(r.stdout.contains(&rejects), "{b}: the summary names the reject file: {r}");
        let shown: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(
            shown,
            [
                "line 4: invalid_number (quantity): line 5: `two` is not a whole number",
                "line 5: invalid_number (quantity): `two` is not a whole number",
            ],
            "{b}: {r}"
        );
        assert!(!r.stderr.contains("more in"), "{b}: all rejects shown: {r}");
        let before = stats(dir.path(), &db.url);
        assert_eq!((before.members, before.member_orders, before.guest_orders, before.skus), (1, 2, 1, 3), "{b}");

        let again = run(dir.path(), &args);
        assert!(again.ok, "{b}: {again}");
        let counts = ["imported", "duplicates", "rejected"].map(|l| again.count(l));
        assert_eq!(counts, [0, 3, 2], "{b}: {again}");
        assert_eq!(stats(dir.path(), &db.url), before, "{b}: a second import changes nothing");
    }
}

#[tokio::test]
async fn members_import_and_file_level_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("members.csv"),
        "customer_no,name,phone,city\nC1,张伟,13812341234,上海\nC2,李娜,,北京\nC3,王芳,139 0000 1111,杭州\nC4,,12,\n",
    )
    .expect("write");
    std::fs::write(d.join("nameless.csv"), "name,city\n张伟,上海\n").expect("write");
    std::fs::write(d.join("orders.csv"), "customer_id,order_id,amount\nc1,o1,100\n").expect("write");
    for db in support::test_dbs().await {
        let b = db.backend;
        let r = run(d, &["import", "members", "members.csv", "--db", &db.url]);
        assert!(r.ok, "{b}: {r}");
        assert_eq!(["rows read", "imported", "rejected"].map(|l| r.count(l)), [4, 3, 1], "{b}: {r}");
        assert!(r.stderr.contains("line 5: invalid_phone (identities[1].value): "), "{b}: {r}");
        // Bulk commands copy SQLite's write-ahead log into the database file before they exit.
        assert_eq!(wal_len(&db.url), 0, "{b}: the import left its log behind");
        assert_eq!(stats(d, &db.url).members, 3, "{b}");
        let r = run(d, &["analyze", "--db", &db.url]);
        assert!(r.ok, "{b}: {r}");
        assert_eq!(wal_len(&db.url), 0, "{b}: the analysis left its log behind");

        run(d, &["import", "members", "nameless.csv", "--db", &db.url]).assert_one_line_error("identity column");
        run(d, &["import", "orders", "orders.csv", "--db", &db.url]).assert_one_line_error("`order_time`");
        run(d, &["import", "members", "missing.csv", "--db", &db.url]).assert_one_line_error("missing.csv");
        run(d, &["import", "orders", "orders.csv", "--mapping", "shopify", "--db", &db.url])
            .assert_one_line_error("online-retail, generic, rees46");
        assert_eq!(stats(d, &db.url).members, 3, "{b}: failed imports write nothing");
    }
}

#[tokio::test]
async fn events_import_reports_the_malformed_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event = |anonymous_id: &str, sku: &str| {
        json!({"type": "product_view", "occurred_at": "2024-05-01T08:00:00Z", "anonymous_id": anonymous_id, "sku": sku})
            .to_string()
    };
    let text =
        [event("v1", "A"), event("v1", "B"), "{\"type\": \"product_view\", \"occurred_at\": ".into(), event("v2", "A")]
            .join("\n");
    std::fs::write(dir.path().join("events.jsonl"), text + "\n").expect("write");
    for db in support::test_dbs().await {
        let b = db.backend;
        let rejects = format!("rejects-{b}.csv");
        let r = run(dir.path(), &["import", "events", "events.jsonl", "--rejects", &rejects, "--db", &db.url]);
        assert!(r.ok, "{b}: {r}");
        assert_eq!(["rows read", "imported", "rejected"].map(|l| r.count(l)), [4, 3, 1], "{b}: {r}");
        assert!(r.stderr.lines().any(|l| l.starts_with("line 3: invalid_json")), "{b}: {r}");
        let s = stats(dir.path(), &db.url);
        assert_eq!((s.events, s.unlinked_events), (3, 3), "{b}");
    }
}

/// Digit runs in `bytes` that look like a mainland mobile number in clear: exactly 11 digits `1[3-9]…` or
/// 13 digits `861[3-9]…`, not part of a longer digit run. A run inside an identifier that has other digits
/// in it (hex digests, WeChat open ids such as `oMp022d68c13392000118`, order numbers) is not a phone
/// number, so the alphanumeric token around the run must have no other digits.
fn phone_like_runs(bytes: &[u8]) -> Vec<String> {
    let token = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let run = &bytes[start..i];
        let phone = match run.len() {
            11 => run[0] == b'1' && (b'3'..=b'9').contains(&run[1]),
            13 => run.starts_with(b"861") && (b'3'..=b'9').contains(&run[3]),
            _ => false,
        };
        // Digits of a decimal number (`0.14285714286` in a stored JSON result) are not a phone number.
        let decimal = (start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit())
            || (bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !phone || decimal {
            continue;
        }
        let before = bytes[..start].iter().rev().take_while(|b| token(b));
        let after = bytes[i..].iter().take_while(|b| token(b));
        if !before.chain(after).any(u8::is_ascii_digit) {
            found.push(String::from_utf8_lossy(run).into_owned());
        }
    }
    found
}

#[test]
fn the_phone_scan_finds_phones_and_ignores_identifiers() {
    let text = b"\x02phone13812345678\x00\"8613912345678\" 13812345678x oMp022d68c13392000118 bi1:8c4d15748602296e7d \
                 DY2026041300000180 138123456789 12812345678 0.14285714286 13812345678.25";
    assert_eq!(phone_like_runs(text), ["13812345678", "8613912345678", "13812345678"]);
    let windows = eleven_digit_windows(text);
    assert!(windows.contains(&b"13912345678"[..]) && windows.contains(&b"13392000118"[..]));
    assert!(!windows.contains(&b"13900000000"[..]));
}

#[tokio::test]
async fn the_demo_shop_has_data_and_no_phone_number_in_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let r = run(d, &["demo", "--db", "shop.db", "--members", "300", "--no-serve"]);
    assert!(r.ok, "{r}");
    assert!(r.stdout.lines().any(|l| l.starts_with("admin key: hy_")), "{r}");
    assert!(d.join("shop.key").exists(), "the demo keeps its key next to its database");
    let mut bytes = std::fs::read(d.join("shop.db")).expect("read the database");
    if let Ok(wal) = std::fs::read(d.join("shop.db-wal")) {
        bytes.extend(wal);
    }

    // The demo's data is read with its own key (shop.key, found next to shop.db); another key is refused.
    let r = run_with(d, &["stats", "--json", "--db", "sqlite://shop.db"], false);
    assert!(r.ok, "{r}");
    let s: Stats = serde_json::from_str(&r.stdout).expect("stats JSON");
    for (what, n) in [
        ("members", s.members),
        ("member orders", s.member_orders),
        ("guest orders", s.guest_orders),
        ("refunds", s.refunds),
        ("events", s.events),
    ] {
        assert!(n > 0, "no {what}: {s:?}");
    }
    assert_eq!(s.members, 300);
    run(d, &["stats", "--db", "sqlite://shop.db"]).assert_one_line_error("key");

    let found = phone_like_runs(&bytes);
    assert!(found.is_empty(), "phone numbers in clear in the database: {found:?}");
    // And the members' actual numbers, read through the app with the demo's key, are not there either.
    let cfg = huiyuan::config::Config {
        database_url: format!("sqlite://{}", d.join("shop.db").display()),
        key_file: d.join("shop.key"),
        ..Default::default()
    };
    let app = huiyuan::app::App::start(cfg).await.expect("open the demo shop");
    let who = huiyuan::security::Principal::cli();
    let mut phones: Vec<String> = Vec::new();
    for id in 1..=30 {
        let Some(m) = app.member_view(id, &who).await.expect("member") else { continue };
        let phone = m.identities.iter().filter(|i| i.kind == huiyuan::members::IdentityKind::Phone);
        phones.extend(phone.filter_map(|i| i.value.as_ref().map(|v| v.chars().filter(char::is_ascii_digit).collect())));
    }
    assert!(phones.len() >= 20, "the demo's members have phone numbers: {phones:?}");
    let stored = eleven_digit_windows(&bytes);
    for p in &phones {
        let national: &str = p.strip_prefix("86").unwrap_or(p);
        assert!(!stored.contains(national.as_bytes()), "{national} is in the database in clear");
    }
}

/// Every 11 consecutive ASCII digits in `bytes` (one pass; searching for each number would take seconds).
fn eleven_digit_windows(bytes: &[u8]) -> std::collections::HashSet<&[u8]> {
    let mut set = std::collections::HashSet::new();
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 11 {
            set.insert(&bytes[i + 1 - 11..=i]);
        }
    }
    set
}

/// A `huiyuan serve` child, killed when dropped (also when a test fails).
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `serve` on a port that was free a moment ago, and wait until `/health` answers.
async fn serve(dir: &Path, db: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("addr").port();
    let child = command(dir, &["serve", "--db", db, "--port", &port.to_string()], true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start huiyuan serve");
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/health", server.base)).send().await
            && r.status().is_success()
        {
            let body: Value = r.json().await.expect("health JSON");
            assert_eq!(body["status"], "ok", "{body}");
            return server;
        }
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = server.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("serve exited with {status} before answering: {err}");
        }
        assert!(Instant::now() < deadline, "serve did not answer /health within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_answers_with_a_cli_key_and_keeps_its_data_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    for db in support::test_dbs().await {
        let b = db.backend;
        let key = run(dir.path(), &["keys", "create", "--role", "admin", "--db", &db.url]);
        assert!(key.ok, "{b}: {key}");
        let key = key.stdout.trim().to_string();

        let server = serve(dir.path(), &db.url).await;
        let get = |path: &str, base: &str| client.get(format!("{base}{path}")).bearer_auth(&key).send();
        let r = get("/v1/stats", &server.base).await.expect("stats");
        assert_eq!(r.status().as_u16(), 200, "{b}");
        assert_eq!(r.json::<Stats>().await.expect("stats JSON"), Stats::default(), "{b}: an empty shop");
        let r = client
            .post(format!("{}/v1/members", server.base))
            .bearer_auth(&key)
            .json(&json!({"identities": [{"kind": "phone", "value": "138 1234 5678"}], "name": "张伟", "city": "上海"}))
            .send()
            .await
            .expect("create member");
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let id = r.json::<Value>().await.expect("member JSON")["member_id"].as_i64().expect("member_id");
        // Killed, not shut down gracefully: what was acknowledged must be on disk.
        drop(server);

        let server = serve(dir.path(), &db.url).await;
        let r = get("/v1/stats", &server.base).await.expect("stats");
        assert_eq!(r.json::<Stats>().await.expect("stats JSON").members, 1, "{b}");
        let r = get(&format!("/v1/members/{id}"), &server.base).await.expect("member");
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let m: Value = r.json().await.expect("member JSON");
        assert_eq!((&m["name"], &m["city"]), (&json!("张伟"), &json!("上海")), "{b}: {m}");
        let r = get("/v1/members/lookup?kind=phone&value=13812345678", &server.base).await.expect("lookup");
        assert_eq!(r.status().as_u16(), 200, "{b}: the phone's blind index survives the restart");
    }
}

/// One request of the crash workload: retried as is after the restart, so each must be idempotent.
#[derive(Clone)]
enum Req {
    Order { member: i64, no: String, placed_at: String },
    Redeem { member: i64, key: String },
    Adjust { member: i64, key: String },
}

async fn send(client: &reqwest::Client, base: &str, key: &str, r: &Req) -> Result<u16, reqwest::Error> {
    let rb = match r {
        Req::Order { member, no, placed_at } => client.post(format!("{base}/v1/orders")).json(&json!({
            "channel": "web", "order_no": no, "member_id": member, "placed_at": placed_at,
            "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": 1000}]
        })),
        Req::Redeem { member, key } => client
            .post(format!("{base}/v1/rewards/cup/redemptions"))
            .header("Idempotency-Key", key)
            .json(&json!({"member_id": member})),
        Req::Adjust { member, key } => client
            .post(format!("{base}/v1/members/{member}/points/adjust"))
            .header("Idempotency-Key", key)
            .json(&json!({"amount": 7, "reason": "补偿"})),
    };
    Ok(rb.bearer_auth(key).send().await?.status().as_u16())
}

#[tokio::test]
async fn a_server_killed_mid_load_loses_and_doubles_nothing_once_every_request_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    for db in support::test_dbs().await {
        let b = db.backend;
        let key = run(dir.path(), &["keys", "create", "--role", "admin", "--db", &db.url]);
        assert!(key.ok, "{b}: {key}");
        let key = key.stdout.trim().to_string();
        let server = serve(dir.path(), &db.url).await;
        let base = server.base.clone();
        let mut members = Vec::new();
        for i in 0..20 {
            let r = client
                .post(format!("{base}/v1/members"))
                .bearer_auth(&key)
                .json(&json!({"identities": [{"kind": "phone", "value": format!("1370000{i:04}")}]}))
                .send()
                .await
                .expect("member");
            assert_eq!(r.status().as_u16(), 201, "{b}");
            members.push(r.json::<Value>().await.expect("JSON")["member_id"].as_i64().expect("id"));
        }
        let r = client
            .put(format!("{base}/v1/rewards/cup"))
            .bearer_auth(&key)
            .json(&json!({"id": "cup", "name": "杯子", "kind": {"type": "service"}, "points": 10}))
            .send()
            .await
            .expect("reward");
        assert_eq!(r.status().as_u16(), 200, "{b}");
        // Per member: 10 orders of 10 yuan (10 pending points each), 5 redemptions of 10 points, 2 adjustments
        // of +7: the 100 registration points cover the redemptions in any order.
        // Placed now (or yesterday on a 会员日, which would double them), so their points stay pending (the
        // return window) whatever the restart's jobs do.
        let placed_at = support::off_member_day(chrono::Utc::now()).to_rfc3339();
        let mut load = Vec::new();
        for &m in &members {
            for k in 0..10 {
                load.push(Req::Order { member: m, no: format!("C-{m}-{k}"), placed_at: placed_at.clone() });
            }
            for k in 0..5 {
                load.push(Req::Redeem { member: m, key: format!("r-{m}-{k}") });
            }
            for k in 0..2 {
                load.push(Req::Adjust { member: m, key: format!("a-{m}-{k}") });
            }
        }
        // Interleave the kinds so the kill lands among all of them.
        load.sort_by_key(|r| match r {
            Req::Order { no, .. } => no.clone(),
            Req::Redeem { key, .. } | Req::Adjust { key, .. } => key.clone(),
        });
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fire = {
            let (client, base, key, load, done) =
                (client.clone(), base.clone(), key.clone(), load.clone(), done.clone());
            tokio::spawn(async move {
                use futures::StreamExt;
                futures::stream::iter(load)
                    .for_each_concurrent(16, |r| {
                        let (client, base, key, done) = (client.clone(), base.clone(), key.clone(), done.clone());
                        async move {
                            if send(&client, &base, &key, &r).await.is_ok() {
                                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                    })
                    .await;
            })
        };
        // Kill it (SIGKILL) once a third of the requests have been answered.
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.load(std::sync::atomic::Ordering::SeqCst) < load.len() / 3 {
            assert!(Instant::now() < deadline, "{b}: the load did not progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(server);
        let answered_before_kill = done.load(std::sync::atomic::Ordering::SeqCst);
        let _ = fire.await;
        assert!(answered_before_kill < load.len(), "{b}: the kill landed after the load finished");

        // Restart and retry every request: each is either applied now or recognised as applied before.
        let server = serve(dir.path(), &db.url).await;
        for r in &load {
            let status = send(&client, &server.base, &key, r).await.expect("retry");
            assert!(status == 200 || status == 201, "{b}: a retry answered {status}");
        }
        // Work queued when the process died is settled by the restarted server's timer.
        let deadline = Instant::now() + Duration::from_secs(30);
        for &m in &members {
            loop {
                let r = client.get(format!("{}/v1/members/{m}/points", server.base)).bearer_auth(&key).send().await;
                let p = r.expect("points").json::<Value>().await.expect("JSON");
                // 100 − 5 × 10 + 2 × 7 available; 10 × 10 pending points and growth.
                let got = (p["available"].as_i64(), p["pending"].as_i64(), p["growth_pending"].as_i64());
                if got == (Some(64), Some(100), Some(100)) {
                    break;
                }
                assert!(Instant::now() < deadline, "{b}: member {m} has {p}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let h: Value = client
                .get(format!("{}/v1/members/{m}/points/history?limit=1000", server.base))
                .bearer_auth(&key)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("JSON");
            let mut by_op: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
            for e in h.as_array().expect("entries") {
                *by_op.entry(e["op"].as_str().expect("op").to_string()).or_default() +=
                    e["amount"].as_i64().expect("amount");
            }
            let redeems = by_op.iter().filter(|(k, v)| k.starts_with("redeem:") && **v == -10).count();
            let adjusts = by_op.iter().filter(|(k, v)| k.starts_with("adjust:") && **v == 7).count();
            let orders =
                by_op.iter().filter(|(k, v)| k.starts_with("order:") && k.ends_with(":points") && **v == 10).count();
            assert_eq!((redeems, adjusts, orders), (5, 2, 10), "{b}: member {m}: {by_op:?}");
            assert_eq!(by_op.len(), 1 + 5 + 2 + 10 + 10, "{b}: member {m}: no operation missing or extra: {by_op:?}");
        }
        drop(server);
        let verify = run(dir.path(), &["loyalty", "verify", "--db", &db.url]);
        assert!(verify.ok, "{b}: {verify}");
    }
}
