//! Bulk import on both stores: the real public data sets (when `../shared/data` is present) and small
//! files written by the tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use huiyuan::import::{self, Entity, ImportOptions, ImportSummary};

use crate::support;

/// A file of the shared data sets, or `None` (with a note) when they are not checked out.
fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("note: {} is absent; test skipped (the shared data sets are not available here)", p.display());
        None
    }
}

fn opts(entity: Entity, path: &Path, mapping: Option<&str>, rejects: &Path) -> ImportOptions {
    ImportOptions {
        entity,
        path: path.to_path_buf(),
        format: None,
        mapping: mapping.map(str::to_string),
        reject_path: Some(rejects.to_path_buf()),
        progress: false,
    }
}

fn reject_rows(path: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path).expect("reject file").records().map(|r| r.expect("reject row")).collect()
}

/// Both stores run at once (the import is mostly CPU on the reading side and I/O on the writing side), to
/// keep this test, which imports the 541,909-row file four times, near a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_retail_imports_every_customer_invoice_once() {
    let Some(file) = shared_data("online_retail/online_retail.csv.gz") else {
        return;
    };
    let runs: Vec<_> =
        support::test_dbs().await.into_iter().map(|db| tokio::spawn(online_retail_twice(db, file.clone()))).collect();
    for run in runs {
        run.await.expect("import task");
    }
}

async fn online_retail_twice(db: support::TestDb, file: PathBuf) {
    let app = support::app_for(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(Entity::Orders, &file, Some("online-retail"), &dir.path().join("rejects.csv"));
    let started = Instant::now();
    let first: ImportSummary = import::run(&app, &o).await.expect("first import");
    eprintln!(
        "[{}] online retail first import: {:?}, {:.0} rows/s\n  {}",
        db.backend,
        started.elapsed(),
        first.rows_per_sec(),
        first.notes.join("\n  ")
    );
    let stats = app.store.stats().await.expect("stats");
    assert_eq!(stats.members, 4_372, "{}", db.backend);
    assert_eq!(stats.member_orders, 18_536, "{}", db.backend);
    assert_eq!(stats.refunds, 3_654, "{}", db.backend);
    assert_eq!(first.read, 541_909);
    assert!(first.skipped >= 5_268, "double records and accounting rows are skipped: {}", first.skipped);
    // Every invoice is accepted, including the largest (a guest order of 1,114 lines).
    assert_eq!(first.rejected, 0, "{:?}", first.reject_file);
    assert_eq!(stats.guest_orders, 2_189, "{}", db.backend);

    let started = Instant::now();
    let second = import::run(&app, &o).await.expect("second import");
    eprintln!("[{}] online retail second import: {:?}", db.backend, started.elapsed());
    assert_eq!(app.store.stats().await.expect("stats"), stats, "{}: a second import changes nothing", db.backend);
    assert_eq!(second.imported, 0, "{:?}", second.notes);
    assert_eq!(second.duplicates, first.imported + first.duplicates);
    assert_eq!(second.rejected, first.rejected);
    analyze_online_retail(&db).await;
}

/// The behaviour analysis on real data is sane: every buyer of the window has an RFM segment and all eight
/// segments occur, the CLV models are fitted with finite parameters, and the churn model beats chance on
/// the held-out period. The window covers the whole file (2010-12-01 to 2011-12-09).
async fn analyze_online_retail(db: &support::TestDb) {
    let mut cfg = support::config_for(db);
    cfg.analytics.rfm.window_days = 400;
    let app = huiyuan::app::App::start(cfg).await.expect("app");
    let as_of = chrono::NaiveDate::from_ymd_opt(2011, 12, 9).expect("date");
    let started = Instant::now();
    let report = app.analyze(as_of, &|_| {}).await.expect("analyze");
    eprintln!("[{}] online retail analyze: {:?}, stages {:?}", db.backend, started.elapsed(), report.stages);
    let b = db.backend;
    let run = report.run.run_id;
    let rows = app.store.member_analytics_rows(run).await.expect("rows");
    let buyers: Vec<_> = rows.iter().filter(|r| r.body.get("clv").is_some()).collect();
    assert!(buyers.len() > 4_000, "{b}: {} buyers", buyers.len());
    assert!(buyers.iter().all(|r| r.rfm_segment.is_some()), "{b}: every buyer has an RFM segment");
    let rfm = app.store.analytics_result(run, "rfm").await.expect("rfm").expect("rfm result");
    let segments = rfm["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 8, "{b}: {rfm}");
    assert!(segments.iter().all(|s| s["count"].as_u64().unwrap_or(0) > 0), "{b}: every segment occurs: {rfm}");
    let clv = app.store.analytics_result(run, "clv_model").await.expect("clv").expect("clv model");
    let bg = &clv["bgnbd"]["params"];
    for p in ["r", "alpha", "a", "b"] {
        assert!(bg[p].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{b}: BG/NBD {p}: {clv}");
    }
    assert!(clv["gamma_gamma"]["params"]["p"].as_f64().is_some_and(f64::is_finite), "{b}: {clv}");
    let churn = app.store.analytics_result(run, "churn").await.expect("churn").expect("churn result");
    let auc = churn["model"]["validation"]["roc_auc"].as_f64().unwrap_or(0.0);
    assert!(auc > 0.5, "{b}: churn ROC-AUC on the held-out period {auc}: {}", churn["model"]["validation"]);
    let lifecycle = app.store.analytics_result(run, "lifecycle").await.expect("lc").expect("lifecycle");
    let counted: u64 = lifecycle["counts"].as_object().expect("counts").values().filter_map(|v| v.as_u64()).sum();
    assert_eq!(counted as usize, rows.len(), "{b}: every member has a stage");
}

#[tokio::test]
async fn rees46_events_import_once() {
    let Some(file) = shared_data("rees46/events_2019-10-01_head.csv.gz") else {
        return;
    };
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let o = opts(Entity::Events, &file, Some("rees46"), &dir.path().join("rejects.csv"));
        let first = import::run(&app, &o).await.expect("first import");
        let stats = app.store.stats().await.expect("stats");
        eprintln!("[{}] rees46: {:?}", db.backend, first.notes);
        assert_eq!(first.read, 17_434);
        assert_eq!(first.rejected, 0);
        assert_eq!(stats.members, 4_504);
        assert_eq!(stats.unlinked_events, 0);
        // Every row is stored or is a true duplicate of an earlier row.
        // Members are all new, so the duplicates are events identical to an earlier row.
        assert_eq!(first.imported, 4_504 + stats.events as u64);
        assert_eq!(stats.events as u64 + first.duplicates, 17_434);
        let second = import::run(&app, &o).await.expect("second import");
        assert_eq!(app.store.stats().await.expect("stats"), stats);
        assert_eq!(second.imported, 0);
        assert_eq!(second.duplicates, 4_504 + 17_434);
    }
}

#[tokio::test]
async fn generic_orders_reject_a_bad_order_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.csv");
    std::fs::write(
        &file,
        "customer_id,order_id,order_time,amount,sku,quantity,unit_price\n\
         c1,o1,2024-05-01 08:00:00,700,A,2,200\n\
         c1,o1,2024-05-01 08:00:00,700,B,1,300\n\
         c2,o2,2024-05-02T09:00:00Z,,A,1,2x0\n\
         c2,o2,2024-05-02T09:00:00Z,,B,1,300\n\
         ,o3,2024-05-03 10:00:00,,C,3,100\n",
    )
    .expect("write");
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let rejects = dir.path().join(format!("rejects-{}.csv", db.backend));
        let o = opts(Entity::Orders, &file, Some("generic"), &rejects);
        let s = import::run(&app, &o).await.expect("import");
        assert_eq!((s.read, s.imported, s.rejected), (5, 2, 2), "{s:?}");
        let rows = reject_rows(&rejects);
        assert_eq!(rows.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(), ["4", "5"]);
        assert!(
            rows.iter().all(|r| &r[1] == "invalid_number" && &r[2] == "unit_price" && r[3].starts_with("line 4:")),
            "{rows:?}"
        );
        let stats = app.store.stats().await.expect("stats");
        assert_eq!((stats.members, stats.member_orders, stats.guest_orders), (1, 1, 1));
        // Without --mapping, orders from CSV are read the same way.
        let again = import::run(&app, &opts(Entity::Orders, &file, None, &rejects)).await.expect("import");
        assert_eq!((again.imported, again.duplicates, again.rejected), (0, 2, 2));
    }
}

#[tokio::test]
async fn members_from_csv_and_jsonl_with_a_malformed_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_file = dir.path().join("members.csv");
    std::fs::write(
        &csv_file,
        "phone,email,customer_no,name,gender,birthday,city,registered_at,registration_channel,consent_sms\n\
         13812341234,zhang.wei@example.com,C1,张伟,男,1990-05-01,上海,2024-01-01 00:00:00,web,yes\n\
         ,not-an-email,C2,,,,,,,\n\
         ,,C3,李娜,female,,北京,,store,no\n",
    )
    .expect("write");
    let jsonl_file = dir.path().join("members.jsonl");
    std::fs::write(
        &jsonl_file,
        "{\"identities\":[{\"kind\":\"customer_no\",\"value\":\"C1\"}],\"city\":\"杭州\"}\n\
         \n\
         {\"identities\":[{\"kind\":\"customer_no\",\"value\":\"C4\"}]\n\
         {\"identities\":[{\"kind\":\"wechat_openid\",\"value\":\"o-abc\"}],\"name\":\"王芳\"}\n",
    )
    .expect("write");
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let rejects = dir.path().join(format!("m-{}.csv", db.backend));
        let s = import::run(&app, &opts(Entity::Members, &csv_file, None, &rejects)).await.expect("csv import");
        assert_eq!((s.read, s.imported, s.rejected), (3, 2, 1), "{s:?}");
        let rows = reject_rows(&rejects);
        assert_eq!((&rows[0][0], &rows[0][1], &rows[0][2]), ("3", "invalid_email", "identities[0].value"));
        let again = import::run(&app, &opts(Entity::Members, &csv_file, None, &rejects)).await.expect("csv again");
        assert_eq!((again.imported, again.duplicates), (0, 2));

        let rejects = dir.path().join(format!("j-{}.csv", db.backend));
        let s = import::run(&app, &opts(Entity::Members, &jsonl_file, None, &rejects)).await.expect("jsonl import");
        assert_eq!((s.read, s.imported, s.rejected), (3, 2, 1), "{s:?}");
        let rows = reject_rows(&rejects);
        assert_eq!((&rows[0][0], &rows[0][1]), ("3", "invalid_json"));
        assert!(rows[0][3].contains("EOF"), "serde's message: {}", &rows[0][3]);
        let stats = app.store.stats().await.expect("stats");
        assert_eq!(stats.members, 3, "C1 updated, the WeChat member new");
    }
}

#[tokio::test]
async fn unknown_mapping_and_missing_column_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, "customer_id,order_id,amount\nc1,o1,100\n").expect("write");
    let db = support::sqlite_db().await;
    let app = support::app_for(&db).await;
    let e =
        import::run(&app, &opts(Entity::Orders, &file, Some("shopify"), &dir.path().join("r.csv"))).await.unwrap_err();
    assert!(e.to_string().contains("online-retail, generic, rees46"), "{e}");
    let e = import::run(&app, &opts(Entity::Orders, &file, None, &dir.path().join("r.csv"))).await.unwrap_err();
    assert!(e.to_string().contains("`order_time`"), "{e}");
}

#[tokio::test]
async fn orders_and_events_from_jsonl_import_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let orders = dir.path().join("orders.jsonl");
    std::fs::write(
        &orders,
        "{\"channel\":\"web\",\"order_no\":\"J1\",\"identity\":{\"kind\":\"customer_no\",\"value\":\"C9\"},\
         \"placed_at\":\"2024-05-01T08:00:00Z\",\"lines\":[{\"sku\":\"A\",\"quantity\":1,\"unit_price\":990}]}\n\
         {\"channel\":\"web\",\"order_no\":\"J2\",\"placed_at\":\"2024-05-01T08:00:00Z\",\"lines\":[]}\n",
    )
    .expect("write");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"product_view\",\"occurred_at\":\"2024-05-01T08:00:00Z\",\
         \"identity\":{\"kind\":\"customer_no\",\"value\":\"C9\"},\"sku\":\"A\"}\n\
         {\"type\":\"teleport\",\"occurred_at\":\"2024-05-01T08:00:00Z\",\"anonymous_id\":\"v1\"}\n",
    )
    .expect("write");
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let rejects = dir.path().join(format!("o-{}.csv", db.backend));
        let s = import::run(&app, &opts(Entity::Orders, &orders, None, &rejects)).await.expect("orders");
        assert_eq!((s.read, s.imported, s.rejected), (2, 1, 1), "{s:?}");
        assert_eq!(&reject_rows(&rejects)[0][2], "lines");
        let rejects = dir.path().join(format!("e-{}.csv", db.backend));
        let s = import::run(&app, &opts(Entity::Events, &events, None, &rejects)).await.expect("events");
        assert_eq!((s.read, s.imported, s.rejected), (2, 1, 1), "{s:?}");
        assert_eq!(&reject_rows(&rejects)[0][1], "unknown_event_type");
        let again = import::run(&app, &opts(Entity::Events, &events, None, &rejects)).await.expect("events again");
        assert_eq!((again.imported, again.duplicates), (0, 1));
        let stats = app.store.stats().await.expect("stats");
        assert_eq!((stats.members, stats.member_orders, stats.events), (1, 1, 1));
    }
}
