use super::*;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn ts(secs: i64) -> DateTime<Utc> {
    base() + Duration::seconds(secs)
}

fn ev(member: i64, secs: i64, event_type: &str) -> Event {
    Event::new(member, ts(secs), event_type)
}

fn funnel(types: &[&str], window_secs: i64) -> FunnelDefinition {
    FunnelDefinition {
        conversion_window_secs: window_secs,
        ..FunnelDefinition::new(types.iter().map(|t| FunnelStep::on(*t)).collect())
    }
}

fn entered(r: &FunnelReport) -> Vec<u64> {
    r.steps.iter().map(|s| s.entered).collect()
}

fn medians(r: &FunnelReport) -> Vec<Option<f64>> {
    r.steps.iter().map(|s| s.median_secs_from_previous).collect()
}

/// Outcome of one member alone: times (seconds from `base`) of the best attempt's matched steps.
fn outcome(events: &[Event], def: &FunnelDefinition) -> Vec<f64> {
    let c = Compiled::new(def).unwrap();
    let mut recs = Vec::new();
    for (i, e) in events.iter().enumerate() {
        push_rec(&mut recs, &c, e, i);
    }
    recs.sort_unstable_by_key(Rec::key);
    let mut dp = Dp::new(&c);
    let mut times = Vec::new();
    dp.unit(&recs, &c, &mut times);
    let b = base().timestamp_micros();
    times.iter().map(|t| (t - b) as f64 / 1e6).collect()
}

#[test]
fn conversion_window_end_is_inclusive() {
    let def = funnel(&["view", "purchase"], 3600);
    let events = vec![
        // Exactly at the end: counts.
        ev(1, 0, "view"),
        ev(1, 3600, "purchase"),
        // One microsecond late: does not.
        ev(2, 0, "view"),
        Event::new(2, ts(3600) + Duration::microseconds(1), "purchase"),
        // One second early: counts.
        ev(3, 0, "view"),
        ev(3, 3599, "purchase"),
    ];
    let r = funnel_report(&events, &def).unwrap();
    assert_eq!(entered(&r), [3, 2]);
    assert_eq!(r.units_total, 3);
    assert_eq!(r.steps[1].conversion_from_previous, Some(2.0 / 3.0));
    // Durations 3600 and 3599: median of two is their mean.
    assert_eq!(medians(&r), [None, Some(3599.5)]);
    assert_eq!(
        r.steps[1].summary,
        "2 of the 3 members who reached 'view' went on to 'purchase' (66.7%), after a median of 60.0 min"
    );
    assert_eq!(r.steps[0].summary, "3 of 3 members entered the funnel at 'view'");
}

#[test]
fn durations_read_in_their_unit() {
    assert_eq!(human_duration(45.0), "45 s");
    assert_eq!(human_duration(90.0), "1.5 min");
    assert_eq!(human_duration(5_400.0), "1.5 h");
    assert_eq!(human_duration(129_600.0), "1.5 d");
}

#[test]
fn per_step_window_edges_and_re_anchoring() {
    let mut def = funnel(&["a", "b", "c"], 86_400);
    def.steps[1].max_secs_from_previous = Some(60);
    def.steps[2].max_secs_from_previous = Some(60);
    // Exactly 60 s: counts; 61 s: does not.
    let m1 = [ev(1, 0, "a"), ev(1, 60, "b"), ev(1, 120, "c")];
    assert_eq!(outcome(&m1, &def), [0.0, 60.0, 120.0]);
    let m2 = [ev(2, 0, "a"), ev(2, 60, "b"), ev(2, 121, "c")];
    assert_eq!(outcome(&m2, &def), [0.0, 60.0]);
    let m3 = [ev(3, 0, "a"), ev(3, 61, "b")];
    assert_eq!(outcome(&m3, &def), [0.0]);
    // A later b re-anchors the window for c, where "first occurrence" matching would stop at b.
    let m4 = [ev(4, 0, "a"), ev(4, 10, "b"), ev(4, 40, "a"), ev(4, 90, "b"), ev(4, 130, "c")];
    assert_eq!(outcome(&m4, &def), [40.0, 90.0, 130.0]);
    let all: Vec<Event> = [m1.as_slice(), &m2, &m3, &m4].concat();
    let r = funnel_report(&all, &def).unwrap();
    assert_eq!(entered(&r), [4, 3, 2]);
    // a→b durations 60, 60, 50; b→c durations 60, 40.
    assert_eq!(medians(&r), [None, Some(60.0), Some(50.0)]);
}

#[test]
fn mixpanel_reentry_example() {
    // Window 1 h: A 13:00, A 13:30, B 13:45, C 14:15. The 13:00 attempt reaches B only, the 13:30 one C.
    let def = funnel(&["A", "B", "C"], 3600);
    let m = [ev(1, 3600, "A"), ev(1, 5400, "A"), ev(1, 6300, "B"), ev(1, 8100, "C")];
    assert_eq!(outcome(&m, &def), [5400.0, 6300.0, 8100.0]);
}

#[test]
fn repeated_first_step_takes_the_best_attempt() {
    let def = funnel(&["view", "cart", "purchase"], 100);
    // The first attempt runs out of window before the cart; the second converts.
    let m1 = [ev(1, 0, "view"), ev(1, 150, "view"), ev(1, 200, "cart"), ev(1, 240, "purchase")];
    assert_eq!(outcome(&m1, &def), [150.0, 200.0, 240.0]);
    // Several entries before step 2: the most recent one counts.
    let m2 = [ev(2, 0, "view"), ev(2, 30, "view"), ev(2, 60, "view"), ev(2, 70, "cart")];
    assert_eq!(outcome(&m2, &def), [60.0, 70.0]);
    // A later attempt that gets less far does not replace an earlier one that got further.
    let m3 = [
        ev(3, 0, "view"),
        ev(3, 10, "cart"),
        ev(3, 500, "view"),
        ev(3, 510, "cart"),
        ev(3, 520, "purchase"),
        ev(3, 900, "view"),
    ];
    assert_eq!(outcome(&m3, &def), [500.0, 510.0, 520.0]);
    let all: Vec<Event> = [m1.as_slice(), &m2, &m3].concat();
    let r = funnel_report(&all, &def).unwrap();
    assert_eq!(entered(&r), [3, 3, 2]);
    assert_eq!(r.steps[2].conversion_from_first, Some(2.0 / 3.0));
    // view→cart: 50, 10, 10; cart→purchase: 40, 10.
    assert_eq!(medians(&r), [None, Some(10.0), Some(25.0)]);
}

#[test]
fn members_who_skip_steps() {
    let def = funnel(&["view", "cart", "purchase"], 86_400);
    let events = vec![
        // No cart: stays at view, the purchase does not count.
        ev(1, 0, "view"),
        ev(1, 10, "purchase"),
        // No view: never enters.
        ev(2, 0, "cart"),
        ev(2, 10, "purchase"),
        // Cart before the view: the view starts an attempt that never sees a later cart.
        ev(3, 0, "cart"),
        ev(3, 10, "view"),
        ev(3, 20, "purchase"),
    ];
    let r = funnel_report(&events, &def).unwrap();
    assert_eq!(entered(&r), [2, 0, 0]);
    assert_eq!(r.units_total, 3);
    assert_eq!(r.steps[1].conversion_from_previous, Some(0.0));
    assert_eq!(r.steps[2].conversion_from_previous, None);
    assert_eq!(medians(&r), [None, None, None]);
}

fn exclusion(event_type: &str, after_step: usize, before_step: usize) -> FunnelExclusion {
    FunnelExclusion { event_type: event_type.into(), sku: None, properties: Vec::new(), after_step, before_step }
}

#[test]
fn exclusion_between_two_steps() {
    let mut def = funnel(&["view", "cart", "purchase"], 86_400);
    def.exclusions.push(exclusion("remove", 1, 2));
    // Removed between cart and purchase: reaches cart only.
    let m = [ev(1, 0, "view"), ev(1, 10, "cart"), ev(1, 20, "remove"), ev(1, 30, "purchase")];
    assert_eq!(outcome(&m, &def), [0.0, 10.0]);
    // A new cart after the removal re-opens the way.
    let m = [ev(1, 0, "view"), ev(1, 10, "cart"), ev(1, 20, "remove"), ev(1, 25, "cart"), ev(1, 30, "purchase")];
    assert_eq!(outcome(&m, &def), [0.0, 25.0, 30.0]);
    // At the same instant as either step: not strictly between, no effect.
    let m = [ev(1, 0, "view"), ev(1, 10, "cart"), ev(1, 10, "remove"), ev(1, 30, "purchase"), ev(1, 30, "remove")];
    assert_eq!(outcome(&m, &def), [0.0, 10.0, 30.0]);
    // Before the exclusion window opens (between view and cart): no effect.
    let m = [ev(1, 0, "view"), ev(1, 5, "remove"), ev(1, 10, "cart"), ev(1, 30, "purchase")];
    assert_eq!(outcome(&m, &def), [0.0, 10.0, 30.0]);
}

#[test]
fn exclusion_spanning_several_steps() {
    let mut def = funnel(&["view", "cart", "purchase"], 86_400);
    def.exclusions.push(exclusion("remove", 0, 2));
    // The removal sits between view and purchase: cart is still reached, purchase is not.
    let m = [ev(1, 0, "view"), ev(1, 5, "remove"), ev(1, 10, "cart"), ev(1, 30, "purchase")];
    assert_eq!(outcome(&m, &def), [0.0, 10.0]);
    // A later view starts a clean attempt.
    let m = [ev(1, 0, "view"), ev(1, 5, "remove"), ev(1, 8, "view"), ev(1, 10, "cart"), ev(1, 30, "purchase")];
    assert_eq!(outcome(&m, &def), [8.0, 10.0, 30.0]);
    // In the report: one member converts, one stops at cart.
    let events = vec![
        ev(1, 0, "view"),
        ev(1, 5, "remove"),
        ev(1, 10, "cart"),
        ev(1, 30, "purchase"),
        ev(2, 0, "view"),
        ev(2, 10, "cart"),
        ev(2, 30, "purchase"),
    ];
    let r = funnel_report(&events, &def).unwrap();
    assert_eq!(entered(&r), [2, 2, 1]);
}

#[test]
fn step_and_exclusion_filters_on_sku_and_properties() {
    let mut def = funnel(&["product_view", "purchase"], 86_400);
    def.steps[0].sku = Some("SKU-1".into());
    def.steps[1].properties.push(PropertyFilter { key: "channel".into(), equals: "app".into() });
    let ok = [ev(1, 0, "product_view").with_sku("SKU-1"), ev(1, 10, "purchase").with_property("channel", "app")];
    assert_eq!(outcome(&ok, &def).len(), 2);
    let wrong_sku = [ev(1, 0, "product_view").with_sku("SKU-2"), ev(1, 10, "purchase").with_property("channel", "app")];
    assert!(outcome(&wrong_sku, &def).is_empty());
    let wrong_prop =
        [ev(1, 0, "product_view").with_sku("SKU-1"), ev(1, 10, "purchase").with_property("channel", "web")];
    assert_eq!(outcome(&wrong_prop, &def).len(), 1);
    assert_eq!(def.steps[0].display_label(), "product_view (sku SKU-1)");
}

#[test]
fn out_of_order_input_gives_the_same_report() {
    let mut def = funnel(&["view", "cart", "checkout", "purchase"], 3600);
    def.exclusions.push(exclusion("remove", 1, 3));
    let mut events = Vec::new();
    for m in 0..20i64 {
        let o = m * 7;
        events.extend([
            ev(m, o, "view"),
            ev(m, o + 30, "cart"),
            ev(m, o + 31 + m % 5, "remove"),
            ev(m, o + 40 + m, "cart"),
            ev(m, o + 50 + 2 * m, "checkout"),
            ev(m, o + 100 + m * m, "purchase"),
            ev(m, o + 3000 + 40 * m, "view"),
        ]);
    }
    let sorted = funnel_report(&events, &def).unwrap();
    // Reverse each member's events, then rotate them: same members, scrambled order inside each.
    let mut scrambled = Vec::new();
    for chunk in events.chunks(7) {
        let mut c = chunk.to_vec();
        c.reverse();
        c.rotate_left(3);
        scrambled.extend(c);
    }
    assert_ne!(scrambled, events);
    assert_eq!(funnel_report(&scrambled, &def).unwrap(), sorted);
    assert!(entered(&sorted)[3] > 0);
}

#[test]
fn equal_timestamps_follow_funnel_order() {
    let def = funnel(&["view", "cart", "purchase"], 3600);
    // Cart and purchase in the same second, given purchase first.
    let m = [ev(1, 10, "purchase"), ev(1, 10, "cart"), ev(1, 0, "view")];
    assert_eq!(outcome(&m, &def), [0.0, 10.0, 10.0]);
    // All three at once.
    let m = [ev(1, 0, "purchase"), ev(1, 0, "cart"), ev(1, 0, "view")];
    assert_eq!(outcome(&m, &def), [0.0, 0.0, 0.0]);
    // One event never fills two steps of the same type; two simultaneous ones do.
    let twice = funnel(&["view", "view"], 3600);
    assert_eq!(outcome(&[ev(1, 0, "view")], &twice), [0.0]);
    assert_eq!(outcome(&[ev(1, 0, "view"), ev(1, 0, "view")], &twice), [0.0, 0.0]);
}

#[test]
fn session_counting_versus_member_counting() {
    let mut def = funnel(&["view", "cart", "purchase"], 86_400);
    let events = vec![
        ev(1, 0, "view").in_session("s1"),
        ev(1, 10, "cart").in_session("s1"),
        ev(1, 20, "purchase").in_session("s2"),
        ev(2, 0, "view").in_session("s3"),
        ev(2, 10, "cart").in_session("s3"),
        ev(2, 20, "purchase").in_session("s3"),
        ev(2, 30, "page_view"),
        // A session with no funnel event still counts as a unit.
        ev(2, 40, "search").in_session("s4"),
    ];
    let r = funnel_report(&events, &def).unwrap();
    assert_eq!(entered(&r), [2, 2, 2]);
    assert_eq!(r.units_total, 2);
    assert_eq!(r.events_without_session, 0);
    def.counting = CountingUnit::Session;
    let r = funnel_report(&events, &def).unwrap();
    // s1 reaches cart, s2 has no view, s3 converts, s4 never enters.
    assert_eq!(entered(&r), [2, 2, 1]);
    assert_eq!(r.units_total, 4);
    assert_eq!(r.events_without_session, 1);
    assert_eq!(r.counting, CountingUnit::Session);
    assert!(r.steps[2].summary.contains("sessions"), "{}", r.steps[2].summary);
}

#[test]
fn empty_and_badly_grouped_input() {
    let def = funnel(&["view", "purchase"], 3600);
    let r = funnel_report(&[], &def).unwrap();
    assert_eq!(entered(&r), [0, 0]);
    assert_eq!(r.units_total, 0);
    assert_eq!(r.steps[0].conversion_from_first, None);
    assert_eq!(r.steps[1].median_secs_from_previous, None);
    // Grouped but not ascending is fine.
    let descending = [ev(2, 0, "view"), ev(1, 0, "view"), ev(1, 5, "purchase")];
    assert_eq!(entered(&funnel_report(&descending, &def).unwrap()), [2, 1]);
    let split = [ev(1, 0, "view"), ev(2, 0, "view"), ev(1, 5, "purchase")];
    assert_eq!(funnel_report(&split, &def), Err(FunnelError::NotGrouped(NotGroupedByMember { member_id: 1 })));
}

#[test]
fn validation_names_the_field() {
    let ok = funnel(&["a", "b", "c"], 60);
    assert_eq!(ok.validate(), Ok(()));
    let err = |f: &dyn Fn(&mut FunnelDefinition)| {
        let mut d = ok.clone();
        f(&mut d);
        d.validate().unwrap_err()
    };
    assert_eq!(err(&|d| d.steps.truncate(1)), FunnelError::TooFewSteps { field: "steps", found: 1 });
    assert_eq!(
        err(&|d| d.steps = vec![FunnelStep::on("a"); 33]),
        FunnelError::TooMany { field: "steps", found: 33, max: 32 }
    );
    assert_eq!(
        err(&|d| d.conversion_window_secs = 0),
        FunnelError::NonPositiveWindow { field: "conversion_window_secs".into(), value: 0 }
    );
    assert_eq!(
        err(&|d| d.steps[2].max_secs_from_previous = Some(-5)),
        FunnelError::NonPositiveWindow { field: "steps[2].max_secs_from_previous".into(), value: -5 }
    );
    assert_eq!(
        err(&|d| d.steps[0].max_secs_from_previous = Some(5)),
        FunnelError::WindowOnFirstStep { field: "steps[0].max_secs_from_previous" }
    );
    assert_eq!(
        err(&|d| d.steps[1].event_type = " ".into()),
        FunnelError::Empty { field: "steps[1].event_type".into() }
    );
    assert_eq!(
        err(&|d| d.exclusions.push(exclusion("x", 0, 3))),
        FunnelError::StepOutOfRange { field: "exclusions[0].before_step".into(), value: 3, steps: 3 }
    );
    assert_eq!(
        err(&|d| d.exclusions.push(exclusion("x", 1, 1))),
        FunnelError::ExclusionOrder { field: "exclusions[0]".into(), after_step: 1, before_step: 1 }
    );
    let msg = err(&|d| d.steps[2].max_secs_from_previous = Some(0)).to_string();
    assert!(msg.contains("steps[2].max_secs_from_previous"), "{msg}");
    // An invalid definition is refused before any event is looked at.
    let mut bad = ok.clone();
    bad.steps.truncate(1);
    assert!(matches!(funnel_report(&[], &bad), Err(FunnelError::TooFewSteps { .. })));
}

#[test]
fn definition_from_json_and_toml() {
    let json = r#"{
        "steps": [
            {"event_type": "product_view", "sku": "SKU-1"},
            {"event_type": "add_to_cart", "max_secs_from_previous": 3600},
            {"event_type": "purchase", "label": "paid", "properties": [{"key": "channel", "equals": "app"}]}
        ],
        "exclusions": [{"event_type": "remove_from_cart", "after_step": 1, "before_step": 2}],
        "counting": "session"
    }"#;
    let d: FunnelDefinition = serde_json::from_str(json).unwrap();
    assert_eq!(d.conversion_window_secs, 7 * 86_400);
    assert_eq!(d.counting, CountingUnit::Session);
    assert_eq!(d.steps[1].max_secs_from_previous, Some(3600));
    assert_eq!(d.steps[2].display_label(), "paid");
    assert_eq!(d.validate(), Ok(()));
    let toml_text = r#"
        conversion_window_secs = 86400
        [[steps]]
        event_type = "view"
        [[steps]]
        event_type = "purchase"
        max_secs_from_previous = 600
    "#;
    let d: FunnelDefinition = toml::from_str(toml_text).unwrap();
    assert_eq!(d.steps.len(), 2);
    assert_eq!(d.counting, CountingUnit::Member);
    assert_eq!(d.validate(), Ok(()));
    // Typos are refused rather than silently ignored.
    assert!(serde_json::from_str::<FunnelDefinition>(r#"{"steps": [], "window": 5}"#).is_err());
}

// ---------------------------------------------------------------------------------------------------
// Independent oracle: enumerate every valid sequence of every attempt and apply the documented rules.

fn oracle(events: &[Event], def: &FunnelDefinition) -> Vec<f64> {
    let c = Compiled::new(def).unwrap();
    let mut evs: Vec<(i64, u32, u32)> = events
        .iter()
        .map(|e| {
            let (s, x) = c.masks(e);
            (e.at.timestamp_micros(), s, x)
        })
        .collect();
    evs.sort_by_key(|&(at, s, x)| (at, s.trailing_zeros(), s, x));
    let n_steps = def.steps.len();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    fn extend(chain: &mut Vec<usize>, evs: &[(i64, u32, u32)], def: &FunnelDefinition, out: &mut Vec<Vec<usize>>) {
        out.push(chain.clone());
        let i = chain.len();
        if i == def.steps.len() {
            return;
        }
        let last = chain[i - 1];
        for p in last + 1..evs.len() {
            let (at, s, _) = evs[p];
            if s & (1 << i) == 0 || at - evs[chain[0]].0 > def.conversion_window_secs * 1_000_000 {
                continue;
            }
            if let Some(w) = def.steps[i].max_secs_from_previous
                && at - evs[last].0 > w * 1_000_000
            {
                continue;
            }
            let excluded = def.exclusions.iter().enumerate().any(|(j, x)| {
                x.before_step == i && {
                    let from = evs[chain[x.after_step]].0;
                    evs.iter().any(|&(t, _, m)| m & (1 << j) != 0 && from < t && t < at)
                }
            });
            if excluded {
                continue;
            }
            chain.push(p);
            extend(chain, evs, def, out);
            chain.pop();
        }
    }
    for p in 0..evs.len() {
        if evs[p].1 & 1 != 0 {
            extend(&mut vec![p], &evs, def, &mut chains);
        }
    }
    let Some(k) = chains.iter().map(Vec::len).max() else {
        return Vec::new();
    };
    assert!(k <= n_steps);
    let best = chains
        .iter()
        .filter(|ch| ch.len() == k)
        // Earliest end, then latest predecessors from the back.
        .min_by(|a, b| {
            a[k - 1].cmp(&b[k - 1]).then_with(|| {
                let ra: Vec<usize> = a.iter().rev().copied().collect();
                let rb: Vec<usize> = b.iter().rev().copied().collect();
                rb.cmp(&ra)
            })
        })
        .unwrap();
    let b = base().timestamp_micros();
    best.iter().map(|&p| (evs[p].0 - b) as f64 / 1e6).collect()
}

fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0i64..40, 0usize..5), 0..10)
        .prop_map(|v| v.into_iter().map(|(t, k)| ev(1, t, ["a", "b", "c", "x", "y"][k])).collect())
}

fn arb_definition() -> impl Strategy<Value = FunnelDefinition> {
    (
        prop::collection::vec((0usize..4, prop::option::of(1i64..15)), 2..5),
        1i64..40,
        prop::collection::vec((0usize..2, 0usize..4, 1usize..4), 0..3),
    )
        .prop_map(|(steps, window, excl)| {
            let n = steps.len();
            let mut d = funnel(&[], window);
            d.steps = steps
                .into_iter()
                .enumerate()
                .map(|(i, (k, w))| FunnelStep {
                    max_secs_from_previous: if i == 0 { None } else { w },
                    ..FunnelStep::on(["a", "b", "c", "x"][k])
                })
                .collect();
            d.exclusions = excl
                .into_iter()
                .filter_map(|(k, a, span)| {
                    let (a, b) = (a % (n - 1), a % (n - 1) + span);
                    (b < n).then(|| exclusion(["x", "y"][k], a, b))
                })
                .collect();
            d
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn programme_matches_brute_force(events in arb_events(), def in arb_definition()) {
        prop_assert_eq!(def.validate(), Ok(()));
        prop_assert_eq!(outcome(&events, &def), oracle(&events, &def));
    }
}

#[test]
fn member_progress_agrees_with_the_report_member_by_member() {
    // Window 1 h: member 1 converts through the 13:30 attempt (the Mixpanel example), member 2 stalls at the
    // cart, member 3 never views (not in the funnel), member 4 views only.
    let def = funnel(&["view", "cart", "purchase"], 3600);
    let events = vec![
        ev(1, 0, "view"),
        ev(1, 1800, "view"),
        ev(1, 2700, "cart"),
        ev(1, 4500, "purchase"),
        ev(2, 100, "view"),
        ev(2, 200, "cart"),
        ev(3, 50, "cart"),
        ev(4, 10, "view"),
    ];
    let progress = member_progress(&events, &def).unwrap();
    let got: Vec<(i64, usize)> = progress.iter().map(|p| (p.member_id, p.reached)).collect();
    assert_eq!(got, vec![(1, 3), (2, 2), (4, 1)]);
    assert_eq!(progress[0].step_times, vec![ts(1800), ts(2700), ts(4500)], "the best attempt's times");
    // Summed over members, progress gives the report's counts.
    let report = funnel_report(&events, &def).unwrap();
    let from_progress: Vec<u64> = (0..3).map(|i| progress.iter().filter(|p| p.reached > i).count() as u64).collect();
    assert_eq!(from_progress, entered(&report));
}
