use super::*;
use chrono::{DateTime, Duration, TimeZone, Utc};

fn ts(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(secs)
}

fn ev(member: i64, secs: i64, event_type: &str, session: Option<&str>) -> Event {
    let e = Event::new(member, ts(secs), event_type);
    match session {
        Some(s) => e.in_session(s),
        None => e,
    }
}

fn shop() -> Vec<Event> {
    let s1 = Some("s1");
    let s2 = Some("s2");
    vec![
        // T1: page_view → product_view → add_to_cart (the two product views collapse).
        ev(1, 0, "page_view", s1),
        ev(1, 10, "product_view", s1),
        ev(1, 20, "product_view", s1),
        ev(1, 30, "add_to_cart", s1),
        ev(1, 40, "purchase", s1),
        // T2: stops at the previous purchase: product_view.
        ev(1, 50, "product_view", s1),
        ev(1, 60, "purchase", s1),
        // T3: six collapsed steps, the last four kept.
        ev(2, 0, "search", s2),
        ev(2, 5, "page_view", s2),
        ev(2, 10, "product_view", s2),
        ev(2, 15, "search", s2),
        ev(2, 20, "product_view", s2),
        ev(2, 25, "add_to_cart", s2),
        ev(2, 30, "purchase", s2),
        // T4: the search of another session is not on the path.
        ev(3, 0, "product_view", Some("s3")),
        ev(3, 5, "search", Some("s4")),
        ev(3, 10, "add_to_cart", Some("s3")),
        ev(3, 20, "purchase", Some("s3")),
        // T5: no session, lookback 3600 s before 4000 s: 400 s is in (inclusive), 399 s and 0 s are out;
        // events of any session count.
        ev(4, 0, "page_view", None),
        ev(4, 399, "search", None),
        ev(4, 400, "product_view", Some("x")),
        ev(4, 500, "add_to_cart", None),
        ev(4, 4000, "purchase", None),
        // T6, T7: nothing before, and a second purchase in the same second.
        ev(5, 0, "purchase", Some("s5")),
        ev(5, 0, "purchase", Some("s5")),
        // T8: the cart in the same second as the purchase leads to it, whatever the input order.
        ev(6, 10, "purchase", Some("s6")),
        ev(6, 10, "add_to_cart", Some("s6")),
    ]
}

fn params() -> PathParams {
    PathParams { lookback_secs: 3600, top_k: 100, ..PathParams::default() }
}

fn steps(p: &PathCount) -> Vec<&str> {
    p.steps.iter().map(String::as_str).collect()
}

#[test]
fn hand_built_paths() {
    let r = top_paths(&shop(), &params()).unwrap();
    assert_eq!(r.target_events, 8);
    assert_eq!(r.distinct_paths, 6);
    let got: Vec<(Vec<&str>, u64)> = r.paths.iter().map(|p| (steps(p), p.count)).collect();
    let want: Vec<(Vec<&str>, u64)> = vec![
        (vec![], 2),
        (vec!["product_view", "add_to_cart"], 2),
        (vec!["add_to_cart"], 1),
        (vec!["page_view", "product_view", "add_to_cart"], 1),
        (vec!["product_view"], 1),
        (vec!["product_view", "search", "product_view", "add_to_cart"], 1),
    ];
    assert_eq!(got, want);
    assert_eq!(r.paths[0].label, "(direct) → purchase");
    assert_eq!(r.paths[1].label, "product_view → add_to_cart → purchase");
    assert_eq!(r.paths[1].share, 0.25);
    assert_eq!(r.paths[2].share, 0.125);
}

#[test]
fn top_k_and_max_steps() {
    let p = PathParams { top_k: 2, max_steps: 2, ..params() };
    let r = top_paths(&shop(), &p).unwrap();
    // T1 and T3 both end in product_view → add_to_cart now, joining T4 and T5.
    assert_eq!(r.paths.len(), 2);
    assert_eq!(steps(&r.paths[0]), ["product_view", "add_to_cart"]);
    assert_eq!(r.paths[0].count, 4);
    assert_eq!(steps(&r.paths[1]), Vec::<&str>::new());
    assert_eq!(r.distinct_paths, 4);
}

#[test]
fn collapsing_happens_before_truncation() {
    let s = Some("s");
    let events = vec![
        ev(1, 0, "product_view", s),
        ev(1, 1, "add_to_cart", s),
        ev(1, 2, "add_to_cart", s),
        ev(1, 3, "add_to_cart", s),
        ev(1, 4, "purchase", s),
    ];
    let p = PathParams { max_steps: 2, ..params() };
    let r = top_paths(&events, &p).unwrap();
    assert_eq!(steps(&r.paths[0]), ["product_view", "add_to_cart"]);
}

#[test]
fn input_order_inside_members_does_not_matter() {
    let events = shop();
    let mut scrambled = Vec::new();
    for run in member_runs(&events).unwrap() {
        let mut v = events[run].to_vec();
        v.reverse();
        scrambled.extend(v);
    }
    assert_eq!(top_paths(&scrambled, &params()).unwrap(), top_paths(&events, &params()).unwrap());
}

#[test]
fn other_target_types() {
    let p = PathParams { target_event_type: "add_to_cart".into(), ..params() };
    let r = top_paths(&shop(), &p).unwrap();
    assert_eq!(r.target_events, 5);
}

#[test]
fn errors_and_empty_input() {
    let r = top_paths(&[], &PathParams::default()).unwrap();
    assert_eq!((r.target_events, r.distinct_paths), (0, 0));
    assert!(r.paths.is_empty());
    let bad = |p: PathParams| top_paths(&[], &p).unwrap_err();
    assert_eq!(
        bad(PathParams { top_k: 0, ..PathParams::default() }),
        PathError::NonPositive { field: "top_k", value: 0 }
    );
    assert_eq!(
        bad(PathParams { lookback_secs: -1, ..PathParams::default() }),
        PathError::NonPositive { field: "lookback_secs", value: -1 }
    );
    assert_eq!(
        bad(PathParams { target_event_type: String::new(), ..PathParams::default() }),
        PathError::Empty { field: "target_event_type" }
    );
    let split = [ev(1, 0, "purchase", None), ev(2, 0, "purchase", None), ev(1, 1, "purchase", None)];
    assert!(matches!(top_paths(&split, &PathParams::default()), Err(PathError::NotGrouped(_))));
    let p: PathParams = serde_json::from_str(r#"{"max_steps": 3}"#).unwrap();
    assert_eq!((p.max_steps, p.top_k, p.target_event_type.as_str()), (3, 10, "purchase"));
}
