//! The store conformance suite: one story, run on SQLite and on PostgreSQL. Both stores must give the same
//! answers to the same calls.

use huiyuan::app::App;
use huiyuan::commerce::{LineInput, LineKind, OrderInput, OrderStatus, RefundInput, RefundLineInput};
use huiyuan::events::EventInput;
use huiyuan::members::{IdentityInput, IdentityKind, MemberInput};
use huiyuan::security::Principal;
use huiyuan::store::{EventOutcome, IdempotencyBegin, LinkOutcome, MergeOutcome, UpsertOutcome, WriteOutcome};

use crate::support::{app_for, config_for, test_dbs};

fn member(phone: &str, name: &str) -> MemberInput {
    MemberInput {
        identities: vec![IdentityInput::new(IdentityKind::Phone, phone)],
        name: Some(name.into()),
        ..Default::default()
    }
}

fn order(no: &str, member_id: Option<i64>, qty: i64) -> OrderInput {
    OrderInput {
        channel: "web".into(),
        order_no: no.into(),
        store: None,
        member_id,
        identity: None,
        status: OrderStatus::Paid,
        placed_at: "2026-03-01T10:00:00Z".parse().unwrap(),
        paid_at: None,
        currency: None,
        lines: vec![
            LineInput {
                sku: "SKU-1".into(),
                quantity: qty,
                unit_price: 1000,
                discount: 0,
                kind: LineKind::Product,
                name: Some("面霜".into()),
                category_path: None,
                brand: None,
            },
            LineInput {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price: 500,
                discount: 100,
                kind: LineKind::Product,
                name: None,
                category_path: None,
                brand: None,
            },
        ],
        shipping_fee: 800,
        order_discount: 0,
        coupon_code: None,
        total: None,
    }
}

fn event(t: &str, member_id: Option<i64>, anon: Option<&str>) -> EventInput {
    EventInput {
        event_type: t.into(),
        occurred_at: "2026-03-01T09:00:00Z".parse().unwrap(),
        member_id,
        identity: None,
        anonymous_id: anon.map(str::to_string),
        session_id: Some("s1".into()),
        channel: None,
        sku: Some("SKU-1".into()),
        event_id: None,
        properties: Default::default(),
    }
}

async fn upsert(app: &App, m: MemberInput) -> UpsertOutcome {
    app.upsert_members(&[m], &Principal::cli()).await.unwrap().pop().unwrap().unwrap()
}

#[tokio::test]
async fn members_upsert_by_identity() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let id = match upsert(&app, member("13800000001", "李雷")).await {
            UpsertOutcome::Created(id) => id,
            other => panic!("{b}: {other:?}"),
        };
        assert_eq!(upsert(&app, member("+86 138 0000 0001", "李雷")).await, UpsertOutcome::Unchanged(id), "{b}");
        let mut m = member("13800000001", "李雷");
        m.identities.push(IdentityInput::new(IdentityKind::Email, "LiLei@Example.com"));
        m.city = Some("杭州".into());
        match upsert(&app, m).await {
            UpsertOutcome::Updated(got, fields) => {
                assert_eq!(got, id);
                assert_eq!(fields, vec!["city".to_string(), "identities".to_string()], "{b}");
            }
            other => panic!("{b}: {other:?}"),
        }
        let other = upsert(&app, member("13800000002", "韩梅梅")).await.member_id().unwrap();
        let mut both = member("13800000001", "x");
        both.identities.push(IdentityInput::new(IdentityKind::Phone, "13800000002"));
        let mut expected = vec![id, other];
        expected.sort();
        assert_eq!(upsert(&app, both).await, UpsertOutcome::Conflict(expected), "{b}");
        let found =
            app.find_member(&IdentityInput::new(IdentityKind::Email, "lilei@example.com")).await.unwrap().unwrap();
        assert_eq!(found, Some(id), "{b}: email lookup goes through the blind index");
        let rec = app.store.member(id).await.unwrap().unwrap();
        assert_eq!(rec.identities.len(), 2, "{b}");
        assert!(rec.identities.iter().all(|i| i.kind == "phone" || i.kind == "email"));
        assert!(
            rec.identities.iter().all(|i| i.key.starts_with("bi1:") && i.sealed.is_some()),
            "{b}: personal identities are sealed"
        );
    }
}

#[tokio::test]
async fn orders_are_idempotent_and_refunds_bounded() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let who = Principal::cli();
        let m = upsert(&app, member("13800000011", "王芳")).await.member_id().unwrap();
        let o = order("W-1", Some(m), 3);
        let first = app.record_orders(std::slice::from_ref(&o), &who).await.unwrap();
        let id = match first[0] {
            WriteOutcome::Created(id) => id,
            ref other => panic!("{b}: {other:?}"),
        };
        assert_eq!(
            app.record_orders(std::slice::from_ref(&o), &who).await.unwrap(),
            vec![WriteOutcome::Duplicate(id)],
            "{b}"
        );
        let changed = order("W-1", Some(m), 4);
        assert_eq!(app.record_orders(&[changed], &who).await.unwrap(), vec![WriteOutcome::Conflict(id)], "{b}");
        let ghost = order("W-2", Some(999_999), 1);
        match &app.record_orders(&[ghost], &who).await.unwrap()[0] {
            WriteOutcome::Rejected(e) => assert_eq!(e.code, "unknown_member", "{b}"),
            other => panic!("{b}: {other:?}"),
        }
        let stored = app.store.order(id).await.unwrap().unwrap();
        assert_eq!(stored.total, 3 * 1000 + 500 - 100 + 800, "{b}");
        assert_eq!(stored.lines.len(), 2);
        assert_eq!(
            app.store.sku("SKU-1").await.unwrap().map(|s| s.name),
            Some("面霜".to_string()),
            "{b}: line hints fill the catalog"
        );

        let refund = |no: &str, qty: i64| RefundInput {
            channel: "web".into(),
            refund_no: no.into(),
            order_id: None,
            order_no: Some("W-1".into()),
            refunded_at: "2026-03-02T10:00:00Z".parse().unwrap(),
            lines: vec![RefundLineInput { line_no: 1, quantity: qty, amount: None }],
            shipping_refund: 0,
            reason: None,
        };
        assert!(matches!(app.record_refund(&refund("R-1", 2), &who).await.unwrap(), WriteOutcome::Created(_)), "{b}");
        assert!(matches!(app.record_refund(&refund("R-1", 2), &who).await.unwrap(), WriteOutcome::Duplicate(_)), "{b}");
        match app.record_refund(&refund("R-2", 2), &who).await.unwrap() {
            WriteOutcome::Rejected(e) => assert_eq!(e.field, "lines[0].quantity", "{b}: only 1 left"),
            other => panic!("{b}: {other:?}"),
        }
        assert!(matches!(app.record_refund(&refund("R-3", 1), &who).await.unwrap(), WriteOutcome::Created(_)), "{b}");
        assert_eq!(app.store.order(id).await.unwrap().unwrap().refunded_amount, 3000, "{b}");
        let s = app.store.stats().await.unwrap();
        assert_eq!((s.members, s.member_orders, s.guest_orders, s.refunds), (1, 1, 0, 2), "{b}");
    }
}

#[tokio::test]
async fn identities_from_orders_enrol_and_guests_stay_guests() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let who = Principal::cli();
        let mut o = order("T-1", None, 1);
        o.channel = "tmall".into();
        o.identity = Some(IdentityInput::new(IdentityKind::BuyerId("tmall".into()), "tb_buyer_1"));
        let guest = order("G-1", None, 1);
        let out = app.record_orders(&[o, guest], &who).await.unwrap();
        assert!(out.iter().all(|o| matches!(o, WriteOutcome::Created(_))), "{b}: {out:?}");
        let s = app.store.stats().await.unwrap();
        assert_eq!((s.members, s.member_orders, s.guest_orders), (1, 1, 1), "{b}");
        let m = app
            .find_member(&IdentityInput::new(IdentityKind::BuyerId("tmall".into()), "tb_buyer_1"))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let rec = app.store.member(m).await.unwrap().unwrap();
        assert_eq!(rec.registration_channel.as_deref(), Some("tmall"), "{b}");
        let mut no_store = order("X-0", None, 1);
        no_store.store = Some("sh_nanjing".into());
        match &app.record_orders(&[no_store], &who).await.unwrap()[0] {
            WriteOutcome::Rejected(e) => assert_eq!((e.code, e.field.as_str()), ("unknown_store", "store"), "{b}"),
            other => panic!("{b}: {other:?}"),
        }
        let mut bad = order("X-1", None, 1);
        bad.channel = "nowhere".into();
        match &app.record_orders(&[bad], &who).await.unwrap()[0] {
            WriteOutcome::Rejected(e) => assert_eq!((e.code, e.field.as_str()), ("unknown_channel", "channel"), "{b}"),
            other => panic!("{b}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn anonymous_visitors_are_linked_on_login_and_events_deduplicated() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let m = upsert(&app, member("13800000021", "赵敏")).await.member_id().unwrap();
        let out = app
            .record_events(&[event("product_view", None, Some("visitor-1")), event("teleport", Some(m), None)])
            .await
            .unwrap();
        assert_eq!(out[0], EventOutcome::Stored, "{b}");
        assert!(matches!(&out[1], EventOutcome::Rejected(e) if e.code == "unknown_event_type"), "{b}");
        assert_eq!(app.store.stats().await.unwrap().unlinked_events, 1, "{b}");
        // The visitor logs in: a later event carries both.
        let login = event("check_in", Some(m), Some("visitor-1"));
        assert_eq!(app.record_events(std::slice::from_ref(&login)).await.unwrap(), vec![EventOutcome::Stored], "{b}");
        assert_eq!(app.store.stats().await.unwrap().unlinked_events, 0, "{b}: history moved to the member");
        assert_eq!(app.store.member_events(m, 10).await.unwrap().len(), 2, "{b}");
        // Retried anonymous event lands on the member now and is recognised as a duplicate.
        assert_eq!(
            app.record_events(&[event("product_view", None, Some("visitor-1"))]).await.unwrap(),
            vec![EventOutcome::Duplicate],
            "{b}"
        );
        assert_eq!(app.record_events(&[login]).await.unwrap(), vec![EventOutcome::Duplicate], "{b}");
        assert_eq!(app.store.stats().await.unwrap().events, 2, "{b}");
        let linked = app
            .link_identity(m, &IdentityInput::new(IdentityKind::AnonymousId, "visitor-1"), &Principal::cli())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(linked, LinkOutcome::AlreadyLinked, "{b}");
    }
}

#[tokio::test]
async fn merges_move_everything_and_are_recorded() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let who = Principal::cli();
        let a = upsert(&app, member("13800000031", "周杰")).await.member_id().unwrap();
        let mut bm = member("13800000032", "周杰");
        bm.city = Some("成都".into());
        let bid = upsert(&app, bm).await.member_id().unwrap();
        app.record_orders(&[order("M-1", Some(bid), 1)], &who).await.unwrap();
        // The same client event id reached both members (a device shared before the merge).
        let mut e1 = event("check_in", Some(bid), None);
        e1.event_id = Some("device-evt-1".into());
        let mut e2 = event("check_in", Some(a), None);
        e2.event_id = Some("device-evt-1".into());
        app.record_events(&[e1, e2, event("product_view", Some(bid), None)]).await.unwrap();
        let rec = match app.merge_members(a, bid, &who).await.unwrap() {
            MergeOutcome::Merged(r) => r,
            other => panic!("{b}: {other:?}"),
        };
        assert_eq!(rec.detail["order_ids"].as_array().map(Vec::len), Some(1), "{b}");
        assert_eq!(rec.detail["event_ids"].as_array().map(Vec::len), Some(1), "{b}");
        assert_eq!(rec.detail["duplicate_events_dropped"], 1, "{b}: same event on both members kept once");
        assert_eq!(rec.detail["fields_filled"], serde_json::json!(["city"]), "{b}");
        let s = app.store.stats().await.unwrap();
        assert_eq!((s.members, s.merged_members, s.member_orders), (1, 1, 1), "{b}");
        assert_eq!(app.store.member_orders(a, None, 10).await.unwrap().len(), 1, "{b}");
        assert_eq!(app.store.member_events(a, 10).await.unwrap().len(), 2, "{b}");
        let merged = app.store.member(bid).await.unwrap().unwrap();
        assert_eq!(merged.merged_into, Some(a), "{b}");
        assert_eq!(
            app.find_member(&IdentityInput::new(IdentityKind::Phone, "13800000032")).await.unwrap().unwrap(),
            Some(a),
            "{b}"
        );
        // Orders for the merged member's id land on the survivor.
        assert!(matches!(
            app.record_orders(&[order("M-2", Some(bid), 1)], &who).await.unwrap()[0],
            WriteOutcome::Created(_)
        ));
        assert_eq!(app.store.member_orders(a, None, 10).await.unwrap().len(), 2, "{b}");
        assert!(matches!(app.merge_members(a, bid, &who).await.unwrap(), MergeOutcome::NotActive(_)), "{b}");
        assert!(matches!(app.merge_members(a, a, &who).await.unwrap(), MergeOutcome::Same), "{b}");
        let audit = app.store.audit_log(Some(a), 50).await.unwrap();
        assert!(audit.iter().any(|e| e.action == "member.merge"), "{b}");
        // A chain (bid → a → d) is followed to its end; an unknown id in the same batch is refused alone.
        let d = upsert(&app, member("13800000033", "吴磊")).await.member_id().unwrap();
        assert!(matches!(app.merge_members(d, a, &who).await.unwrap(), MergeOutcome::Merged(_)), "{b}");
        let out = app
            .record_orders(
                &[order("M-3", Some(bid), 1), order("M-4", Some(a), 1), order("M-5", Some(987_654), 1)],
                &who,
            )
            .await
            .unwrap();
        assert!(
            matches!(out[0], WriteOutcome::Created(_)) && matches!(out[1], WriteOutcome::Created(_)),
            "{b}: {out:?}"
        );
        assert!(matches!(&out[2], WriteOutcome::Rejected(e) if e.code == "unknown_member"), "{b}: {out:?}");
        assert_eq!(
            app.store.member_orders(d, None, 10).await.unwrap().len(),
            4,
            "{b}: two moved by the merge, two new"
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let now = app.now();
        let s = &app.store;
        assert_eq!(s.idempotency_begin("k:x", "abc", b"one", now).await.unwrap(), IdempotencyBegin::New, "{b}");
        assert_eq!(s.idempotency_begin("k:x", "abc", b"one", now).await.unwrap(), IdempotencyBegin::InProgress, "{b}");
        s.idempotency_finish("k:x", "abc", 201, "{\"ok\":1}").await.unwrap();
        assert_eq!(
            s.idempotency_begin("k:x", "abc", b"one", now).await.unwrap(),
            IdempotencyBegin::Replay { status: 201, body: "{\"ok\":1}".into() },
            "{b}"
        );
        assert_eq!(s.idempotency_begin("k:x", "abc", b"two", now).await.unwrap(), IdempotencyBegin::Mismatch, "{b}");
        assert_eq!(s.idempotency_begin("k:y", "abc", b"two", now).await.unwrap(), IdempotencyBegin::New, "{b}: scoped");
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_before_anything_is_written() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        upsert(&app, member("13800000041", "林")).await;
        drop(app);
        let mut cfg = config_for(&db);
        cfg.secret_key = Some("ff".repeat(32));
        let err = App::start(cfg).await.err().expect("must refuse");
        assert!(err.to_string().contains("does not match"), "{}: {err}", db.backend);
    }
}

/// CI checks that this test ran and passed: it proves the PostgreSQL half of every test above ran.
#[tokio::test]
async fn postgres_half_of_the_suite_runs() {
    let dbs = test_dbs().await;
    let backends: Vec<&str> = dbs.iter().map(|d| d.backend).collect();
    if crate::support::postgres_required() {
        assert_eq!(backends, vec!["sqlite", "postgres"]);
        let app = app_for(&dbs[1]).await;
        assert_eq!(app.store.backend(), huiyuan::store::Backend::Postgres);
    } else {
        assert_eq!(backends[0], "sqlite");
    }
}

#[tokio::test]
async fn the_configured_admin_key_exists_after_start() {
    for db in test_dbs().await {
        let mut cfg = config_for(&db);
        cfg.admin_key = Some("hy_configured_admin_key_for_tests_0123456789".into());
        let app = App::start(cfg.clone()).await.unwrap();
        let who = app.authenticate("hy_configured_admin_key_for_tests_0123456789").await.unwrap();
        assert_eq!(who.map(|p| p.role), Some(huiyuan::security::Role::Admin), "{}", db.backend);
        assert_eq!(app.authenticate("hy_some_other_key").await.unwrap(), None, "{}", db.backend);
        drop(app);
        // Starting again with the same key is fine: it is ensured, not duplicated.
        App::start(cfg).await.unwrap();
    }
}

#[tokio::test]
async fn a_batch_that_names_its_own_new_members_resolves_to_them() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let mut second = member("13800000051", "钱");
        second.identities.push(IdentityInput::new(IdentityKind::Email, "qian@example.com"));
        second.city = Some("苏州".into());
        let batch = vec![member("13800000051", "钱"), member("13800000052", "孙"), second, member("13800000053", "李")];
        let out: Vec<UpsertOutcome> =
            app.upsert_members(&batch, &Principal::cli()).await.unwrap().into_iter().map(Result::unwrap).collect();
        let first = match out[0] {
            UpsertOutcome::Created(id) => id,
            ref o => panic!("{b}: {o:?}"),
        };
        assert!(matches!(out[1], UpsertOutcome::Created(id) if id != first), "{b}: {out:?}");
        assert_eq!(out[2], UpsertOutcome::Updated(first, vec!["city".into(), "identities".into()]), "{b}");
        assert!(matches!(out[3], UpsertOutcome::Created(_)), "{b}: {out:?}");
        assert_eq!(app.store.stats().await.unwrap().members, 3, "{b}");
        let found =
            app.find_member(&IdentityInput::new(IdentityKind::Email, "qian@example.com")).await.unwrap().unwrap();
        assert_eq!(found, Some(first), "{b}");
    }
}

/// SQLite's log is checkpointed in the background, not inside a commit (`wal_autocheckpoint` is off): a
/// moment after the last write, the database file alone, without its log, holds every committed row.
#[tokio::test]
async fn sqlite_checkpoints_committed_rows_into_the_database_file_in_the_background() {
    use sqlx::Connection;
    let s = crate::support::TestServer::spawn(crate::support::sqlite_db().await).await;
    for i in 0..40 {
        let (status, body) = s
            .post(
                "/v1/members",
                serde_json::json!({"identities": [{"kind": "phone", "value": format!("1391000{i:04}")}]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::copy(s.db.url.trim_start_matches("sqlite://"), &copy).unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&copy).immutable(true).read_only(true);
    let mut file_alone = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members").fetch_one(&mut file_alone).await.unwrap();
    assert_eq!(members, 40, "every committed member is in the database file itself");
}
