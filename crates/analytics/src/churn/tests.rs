use super::*;
use approx::assert_abs_diff_eq;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

fn d(n: i64) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(2022, 1, 1).unwrap();
    if n >= 0 {
        base.checked_add_days(Days::new(n as u64)).unwrap()
    } else {
        base.checked_sub_days(Days::new((-n) as u64)).unwrap()
    }
}

fn buy(day: i64, fen: i64) -> DatedAmount {
    DatedAmount { day: d(day), amount_fen: fen }
}

fn ev(day: i64, kind: EngagementKind, count: u32) -> EngagementRecord {
    EngagementRecord { day: d(day), kind, count }
}

fn pts(day: i64, points: i64) -> PointsMovement {
    PointsMovement { day: d(day), points }
}

fn empty(member_id: i64, registered: i64) -> ChurnHistory {
    ChurnHistory {
        member_id,
        registered_on: d(registered),
        purchases: vec![],
        refunds: vec![],
        engagement: vec![],
        points: vec![],
    }
}

/// Last day of simulated data: histories run past `as_of` so the tests can check it is ignored.
const AS_OF: i64 = 720;
const END: i64 = AS_OF + 200;

/// Arrival days of a Poisson process on `[from, to)` whose rate is `rate(t) ≤ max_rate`, by thinning.
fn arrivals(rng: &mut ChaCha8Rng, from: i64, to: i64, max_rate: f64, rate: impl Fn(f64) -> f64) -> Vec<i64> {
    let gap = Exp::new(max_rate).unwrap();
    let mut t = from as f64;
    let mut out = vec![];
    loop {
        t += gap.sample(rng);
        if t >= to as f64 {
            return out;
        }
        if rng.random::<f64>() * max_rate < rate(t) {
            out.push(t.floor() as i64);
        }
    }
}

/// A simulated shop. With `signal`, every member has a lapse day: purchases and views fade linearly over
/// the 150 days before it and stop after it, so a declining frequency foretells churn. Without `signal`,
/// every member buys as a Poisson process of one common rate (memoryless: the past says nothing about
/// the next 90 days) and engagement is independent noise.
fn population(n: usize, seed: u64, signal: bool) -> Vec<ChurnHistory> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let registered = rng.random_range(0..200);
            let base = if signal { rng.random_range(1.0 / 60.0..1.0 / 15.0) } else { std::f64::consts::LN_2 / 90.0 };
            let lapse = if signal { rng.random_range(150.0..(END + 400) as f64) } else { f64::INFINITY };
            let fade = move |t: f64| {
                if t >= lapse { 0.0 } else { ((lapse - t) / 150.0).min(1.0) }
            };
            let mut h = empty(i as i64, registered);
            for day in arrivals(&mut rng, registered, END, base, |t| base * fade(t)) {
                let fen = rng.random_range(2_000..40_000);
                h.purchases.push(buy(day, fen));
                h.points.push(pts(day, fen / 100));
                if rng.random_bool(0.05) {
                    h.refunds.push(buy(day + 3, fen / 2));
                }
                if rng.random_bool(0.2) {
                    h.points.push(pts(day, -rng.random_range(10..200)));
                }
            }
            let view_rate = if signal { 0.2 } else { 0.15 };
            for day in arrivals(&mut rng, registered, END, view_rate, |t| view_rate * fade(t)) {
                h.engagement.push(ev(day, EngagementKind::View, rng.random_range(1..4)));
                if rng.random_bool(0.2) {
                    h.engagement.push(ev(day, EngagementKind::Cart, 1));
                }
            }
            for day in arrivals(&mut rng, registered, END, 0.02, |_| 0.02) {
                h.engagement.push(ev(day, EngagementKind::CampaignClick, 1));
            }
            for day in arrivals(&mut rng, registered, END, 0.05, |t| 0.05 * fade(t)) {
                h.engagement.push(ev(day, EngagementKind::CheckIn, 1));
            }
            h
        })
        .collect()
}

fn truncate(h: &ChurnHistory, last: NaiveDate) -> ChurnHistory {
    ChurnHistory {
        member_id: h.member_id,
        registered_on: h.registered_on,
        purchases: h.purchases.iter().copied().filter(|r| r.day <= last).collect(),
        refunds: h.refunds.iter().copied().filter(|r| r.day <= last).collect(),
        engagement: h.engagement.iter().copied().filter(|r| r.day <= last).collect(),
        points: h.points.iter().copied().filter(|r| r.day <= last).collect(),
    }
}

#[test]
fn features_hand_computed_with_window_edges() {
    let c = 1000;
    let mut h = empty(7, c - 400);
    h.purchases = vec![
        buy(c - 10, 10_000),
        buy(c - 100, 5_000),
        buy(c - 200, 3_000),
        buy(c + 5, 99_999), // after the cutoff: ignored
    ];
    h.refunds = vec![buy(c - 8, 2_000), buy(c - 150, 1_000), buy(c + 2, 500)];
    h.engagement = vec![
        ev(c, EngagementKind::View, 3),              // age 0: both windows
        ev(c - 29, EngagementKind::View, 2),         // age 29: still in the 30-day window
        ev(c - 30, EngagementKind::CheckIn, 1),      // age 30: 90-day window only
        ev(c - 45, EngagementKind::Cart, 1),         // 90-day window only
        ev(c - 90, EngagementKind::Cart, 5),         // age 90: outside both
        ev(c + 1, EngagementKind::CampaignClick, 4), // future: ignored
    ];
    h.points = vec![pts(c - 5, 100), pts(c - 60, -50), pts(c - 95, 999), pts(c + 3, 7)];
    let p = ChurnParams::default();
    let f = churn_features(&h, d(c), &p).unwrap();
    assert_eq!(f.recency_days, 10);
    assert_eq!((f.orders_window, f.orders_prior, f.orders_lifetime), (1, 1, 3));
    assert_eq!((f.spend_window_fen, f.spend_prior_fen, f.spend_lifetime_fen), (10_000, 5_000, 18_000));
    assert_eq!(f.short, EngagementCounts { views: 5, carts: 0, check_ins: 0, campaign_clicks: 0 });
    assert_eq!(f.window, EngagementCounts { views: 5, carts: 1, check_ins: 1, campaign_clicks: 0 });
    assert_eq!((f.points_earned, f.points_redeemed), (100, 50));
    assert_eq!((f.refunds_window, f.refunded_lifetime_fen), (1, 3_000));
    assert_eq!(f.tenure_days, 400);
    let v = f.vector();
    assert_eq!(v[0], 10.0);
    assert_abs_diff_eq!(v[1], 2f64.ln(), epsilon = 1e-12); // ln(1 + 1 order)
    assert_abs_diff_eq!(v[2], 0.0, epsilon = 1e-12); // 1 order vs 1 order
    assert_abs_diff_eq!(v[3], 101f64.ln(), epsilon = 1e-12); // ln(1 + ¥100)
    assert_abs_diff_eq!(v[4], 101f64.ln() - 51f64.ln(), epsilon = 1e-12);
    assert_abs_diff_eq!(v[17], 3_000.0 / 18_000.0, epsilon = 1e-12);
    assert_eq!(v[18], 400.0);
    // Nothing before the cutoff: outside the population.
    assert_eq!(churn_features(&h, d(c - 201), &p), None);
}

#[test]
fn label_window_is_half_open() {
    let c = 500;
    let mut h = empty(1, 0);
    h.purchases = vec![buy(c, 100), buy(c + 90, 100)];
    assert_eq!(churn_label(&h, d(c), 90), Some(false)); // c + 90 is inside (c, c + 90]
    h.purchases = vec![buy(c, 100), buy(c + 91, 100)];
    assert_eq!(churn_label(&h, d(c), 90), Some(true));
    h.purchases = vec![buy(c + 1, 100)];
    assert_eq!(churn_label(&h, d(c), 90), None); // no purchase on or before c
}

#[test]
fn engineered_signal_is_found_on_the_held_out_period() {
    let hs = population(4_000, 11, true);
    let m = train_and_evaluate(&hs, d(AS_OF), &ChurnParams::default()).unwrap();
    let v = &m.validation;
    assert!(v.roc_auc > 0.75, "roc_auc {}", v.roc_auc);
    assert!(
        v.pr_auc > v.evaluation.positive_rate + 0.15,
        "pr_auc {} vs base rate {}",
        v.pr_auc,
        v.evaluation.positive_rate
    );
    assert_eq!(v.train.cutoff, d(AS_OF - 180));
    assert_eq!(v.train.label_end, d(AS_OF - 90));
    assert_eq!(v.evaluation.cutoff, d(AS_OF - 90));
    assert_eq!(v.evaluation.label_end, d(AS_OF));
    assert_eq!(m.fitted_at, d(AS_OF - 90));
    // Recency raises churn risk; recent orders lower it.
    let coef = |name: &str| m.model.features.iter().find(|c| c.feature == name).unwrap().coefficient;
    assert!(coef("recency_days") > 0.0);
    assert!(coef("orders_last_90d") < 0.0);
    // Scores at as_of: a lapsed member ranks above a steady one.
    let scores = m.score_all(&hs, d(AS_OF)).unwrap();
    assert!(scores.len() > 3_000);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(&s.probability)));
    let mut lapsed = empty(-1, 0);
    lapsed.purchases = vec![buy(AS_OF - 300, 5_000), buy(AS_OF - 280, 5_000)];
    let mut steady = empty(-2, 0);
    steady.purchases = (0..24).map(|k| buy(AS_OF - 30 * k, 8_000)).collect();
    // Engaged the way active simulated members are: views every few days, a check-in every 20.
    steady.engagement = (0..60)
        .map(|k| ev(AS_OF - 3 * k, EngagementKind::View, 2))
        .chain((0..9).map(|k| ev(AS_OF - 20 * k, EngagementKind::CheckIn, 1)))
        .collect();
    let pl = m.score(&lapsed, d(AS_OF)).unwrap();
    let ps = m.score(&steady, d(AS_OF)).unwrap();
    assert!(pl.probability > 0.8 && ps.probability < 0.3, "{pl:?} {ps:?}");
    assert!(pl.top_reasons.iter().any(|r| r.text == "no purchase for 280 days"), "{pl:?}");
}

#[test]
fn pure_noise_gives_chance_level_auc() {
    let hs = population(6_000, 12, false);
    let m = train_and_evaluate(&hs, d(AS_OF), &ChurnParams::default()).unwrap();
    let v = &m.validation;
    assert!((v.roc_auc - 0.5).abs() < 0.04, "roc_auc {} on noise (n = {})", v.roc_auc, v.evaluation.members);
    assert!(
        (v.pr_auc - v.evaluation.positive_rate).abs() < 0.05,
        "pr_auc {} vs base rate {}",
        v.pr_auc,
        v.evaluation.positive_rate
    );
}

#[test]
fn data_after_as_of_changes_nothing() {
    let hs = population(1_500, 13, true);
    let p = ChurnParams::default();
    // The simulated histories run 200 days past as_of; cut them at as_of and compare.
    let cut: Vec<ChurnHistory> = hs.iter().map(|h| truncate(h, d(AS_OF))).collect();
    assert_ne!(cut, hs, "the fixture must have records after as_of");
    let mut flooded = cut.clone();
    for h in &mut flooded {
        h.purchases.push(buy(AS_OF + 1, 50_000));
        h.refunds.push(buy(AS_OF + 2, 1_000));
        h.engagement.push(ev(AS_OF + 1, EngagementKind::View, 9));
        h.points.push(pts(AS_OF + 1, 500));
    }
    let a = train_and_evaluate(&hs, d(AS_OF), &p).unwrap();
    let b = train_and_evaluate(&cut, d(AS_OF), &p).unwrap();
    let c = train_and_evaluate(&flooded, d(AS_OF), &p).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.score_all(&hs, d(AS_OF)).unwrap(), c.score_all(&flooded, d(AS_OF)).unwrap());
}

#[test]
fn evaluation_labels_never_reach_the_validated_model() {
    // Records in (c2, as_of] decide the evaluation labels. Changing them must leave the validation model
    // (trained at c1 with labels up to c2) untouched, while the metrics do move.
    let hs = population(1_500, 14, true);
    let p = ChurnParams::default();
    let c2 = AS_OF - 90;
    let mut changed = hs.clone();
    let mut flipped = 0;
    for h in &mut changed {
        if churn_label(h, d(c2), 90) == Some(true) && h.member_id % 2 == 0 {
            h.purchases.push(buy(c2 + 1, 9_000));
            flipped += 1;
        }
    }
    assert!(flipped > 20);
    let a = train_and_evaluate(&hs, d(AS_OF), &p).unwrap();
    let b = train_and_evaluate(&changed, d(AS_OF), &p).unwrap();
    assert_eq!(a.validation.model, b.validation.model);
    assert_eq!(a.validation.train, b.validation.train);
    assert!(b.validation.evaluation.positive_rate < a.validation.evaluation.positive_rate);
    assert_ne!(a.validation.roc_auc, b.validation.roc_auc);
}

#[test]
fn refit_switch_chooses_the_scoring_model() {
    let hs = population(1_500, 15, true);
    let p = ChurnParams { refit_at_latest_cutoff: false, ..ChurnParams::default() };
    let m = train_and_evaluate(&hs, d(AS_OF), &p).unwrap();
    assert_eq!(m.fitted_at, d(AS_OF - 180));
    assert_eq!(m.model, m.validation.model);
    let refit = train_and_evaluate(&hs, d(AS_OF), &ChurnParams::default()).unwrap();
    assert_ne!(refit.model, refit.validation.model);
    assert_eq!(refit.validation, m.validation);
}

/// A hand-set model: every mean 0 and sd 1, so contributions are `coefficient × raw value`.
fn hand_model(coefs: &[(&str, f64)], top: usize) -> ChurnModel {
    let p = ChurnParams { top_reasons: top, ..ChurnParams::default() };
    let features: Vec<FeatureCoefficient> = FEATURES
        .iter()
        .map(|f| {
            let name = f.name(&p);
            let coefficient = coefs.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, c)| *c);
            FeatureCoefficient { feature: name, mean: 0.0, sd: 1.0, coefficient }
        })
        .collect();
    let logit = FittedChurnLogit { intercept: -1.0, features };
    let stats = PeriodStats { cutoff: d(0), label_end: d(90), members: 0, positive_rate: 0.0 };
    ChurnModel {
        params: p,
        as_of: d(0),
        fitted_at: d(0),
        model: logit.clone(),
        validation: ChurnValidation { train: stats, evaluation: stats, roc_auc: 0.5, pr_auc: 0.0, model: logit },
    }
}

#[test]
fn reasons_are_the_largest_positive_contributions_in_order() {
    let c = 1000;
    let m = hand_model(
        &[
            ("recency_days", 0.05),
            ("orders_trend_last_90d_vs_prior_90d", -1.0),
            ("spend_trend_last_90d_vs_prior_90d", -0.3),
            ("refunds_last_90d", 0.2),
            ("tenure_days", -0.001),
        ],
        3,
    );
    let mut h = empty(42, c - 400);
    // Two orders of ¥50 in the last 90 days, five of ¥80 in the 90 before.
    h.purchases = vec![buy(c - 30, 5_000), buy(c - 60, 5_000)];
    h.purchases.extend((0..5).map(|k| buy(c - 100 - 10 * k, 8_000)));
    h.refunds = vec![buy(c - 20, 1_000)];
    let s = m.score(&h, d(c)).unwrap();
    let texts: Vec<&str> = s.top_reasons.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        texts,
        ["no purchase for 30 days", "orders down 60% vs previous 90 days", "spend down 75% vs previous 90 days"]
    );
    // Contributions: 0.05·30, −1·(ln 3 − ln 6), −0.3·(ln 101 − ln 401); refunds (0.2·ln 2) is fourth.
    let expect = [1.5, 2f64.ln(), -0.3 * (101f64.ln() - 401f64.ln())];
    for (r, e) in s.top_reasons.iter().zip(expect) {
        assert_abs_diff_eq!(r.contribution, e, epsilon = 1e-12);
    }
    let logit = -1.0 + expect.iter().sum::<f64>() + 0.2 * 2f64.ln() - 0.001 * 400.0;
    assert_abs_diff_eq!(s.probability, 1.0 / (1.0 + (-logit).exp()), epsilon = 1e-12);
    // A steady member with no positive contribution gets no reasons.
    let mut steady = empty(43, c - 10);
    steady.purchases = vec![buy(c, 5_000)];
    let m2 = hand_model(&[("recency_days", 0.05)], 3);
    assert!(m2.score(&steady, d(c)).unwrap().top_reasons.is_empty());
}

#[test]
fn degenerate_inputs_are_typed_errors() {
    let p = ChurnParams::default();
    assert!(matches!(train_and_evaluate(&[], d(AS_OF), &p), Err(ChurnError::TooFewMembers { found: 0, .. })));
    let few = population(20, 16, true);
    assert!(matches!(train_and_evaluate(&few, d(AS_OF), &p), Err(ChurnError::TooFewMembers { .. })));
    // Everyone bought once long ago and never again: all churned.
    let all_churn: Vec<ChurnHistory> = (0..200)
        .map(|i| {
            let mut h = empty(i, 0);
            h.purchases = vec![buy(10, 1_000)];
            h
        })
        .collect();
    assert!(matches!(
        train_and_evaluate(&all_churn, d(AS_OF), &p),
        Err(ChurnError::TooFewInClass { retained: 0, churned: 200, .. })
    ));
    // Everyone buys every 10 days: nobody churns.
    let none_churn: Vec<ChurnHistory> = (0..200)
        .map(|i| {
            let mut h = empty(i, 0);
            h.purchases = (0..100).map(|k| buy(10 * k, 1_000 + i)).collect();
            h
        })
        .collect();
    assert!(matches!(train_and_evaluate(&none_churn, d(AS_OF), &p), Err(ChurnError::TooFewInClass { churned: 0, .. })));
    // Absurd amounts saturate instead of overflowing.
    let mut huge = population(300, 17, true);
    for h in &mut huge {
        h.purchases.push(buy(100, i64::MAX));
        h.refunds.push(buy(101, i64::MAX));
        h.points.push(pts(AS_OF - 1, i64::MIN));
    }
    assert!(train_and_evaluate(&huge, d(AS_OF), &p).is_ok());
    // Bad parameters and dates.
    let bad = ChurnParams { horizon_days: 0, ..p.clone() };
    assert!(matches!(train_and_evaluate(&few, d(AS_OF), &bad), Err(ChurnError::InvalidParams(_))));
    let bad = ChurnParams { l2_penalty: f64::NAN, ..p.clone() };
    assert!(matches!(train_and_evaluate(&few, d(AS_OF), &bad), Err(ChurnError::InvalidParams(_))));
    assert!(matches!(train_and_evaluate(&few, NaiveDate::MIN, &p), Err(ChurnError::DateOutOfRange { .. })));
    // Scoring outside the population, and a model of the wrong shape.
    let m = hand_model(&[], 3);
    assert_eq!(m.score(&empty(5, 0), d(10)), Err(ChurnError::NotInPopulation { member_id: 5, as_of: d(10) }));
    let mut broken = m.clone();
    broken.model.features.pop();
    let mut h = empty(6, 0);
    h.purchases = vec![buy(1, 100)];
    assert!(matches!(broken.score(&h, d(10)), Err(ChurnError::ModelShape { .. })));
    assert!(matches!(broken.score_all(&[h], d(10)), Err(ChurnError::ModelShape { .. })));
}

/// The matrices are written a chunk of members at a time into their final places: across several chunks
/// (the last one short), each row is still its member's features and label, in member order.
#[test]
fn design_matrices_hold_every_members_row_in_order_across_chunks() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let hs: Vec<ChurnHistory> = (0..45_123)
        .map(|i| {
            let mut h = empty(i, rng.random_range(0..300));
            for _ in 0..rng.random_range(0..6) {
                let day = rng.random_range(0..END);
                h.purchases.push(buy(day, rng.random_range(100..50_000)));
                h.points.push(pts(day, rng.random_range(-50..500)));
            }
            h.purchases.sort_by_key(|p| p.day);
            h
        })
        .collect();
    let p = ChurnParams::default();
    let periods = [(d(AS_OF - 180), d(AS_OF - 90)), (d(AS_OF - 90), d(AS_OF))];
    let built = build_periods(hs.as_slice(), periods, &p).unwrap();
    for (period, (cutoff, _)) in built.iter().zip(periods) {
        let expected: Vec<(bool, [f64; N_FEATURES])> = hs
            .iter()
            .filter_map(|h| Some((churn_label(h, cutoff, p.horizon_days)?, churn_features(h, cutoff, &p)?.vector())))
            .collect();
        assert!(expected.len() > 20_000, "the population spans more than one chunk");
        assert_eq!(period.x.nrows(), expected.len());
        assert_eq!(period.y, expected.iter().map(|(y, _)| *y).collect::<Vec<_>>());
        for (row, (_, v)) in period.x.rows().into_iter().zip(&expected) {
            assert_eq!(row.to_vec(), v.to_vec());
        }
    }
}

#[test]
fn training_is_deterministic() {
    let hs = population(800, 18, true);
    let p = ChurnParams::default();
    // Same model whatever the thread count, so nothing depends on how rayon splits the work.
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| train_and_evaluate(&hs, d(AS_OF), &p).unwrap())
    };
    assert_eq!(run(1), run(5));
}

/// The UCI Online Retail file: `$HUIYUAN_DATA_DIR` or `../shared/data` from the project root.
fn retail_path() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("HUIYUAN_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = dir.join("online_retail/online_retail.csv.gz");
    path.exists().then_some(path)
}

/// Per-customer histories from the real file: each invoice is one purchase (sum of quantity × price,
/// in pence as "fen"), each cancellation invoice (`C…`) one refund; registration = first invoice day.
fn load_retail(path: &std::path::Path) -> Vec<ChurnHistory> {
    use std::collections::BTreeMap;
    let file = std::fs::File::open(path).unwrap();
    let mut rdr = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let mut invoices: BTreeMap<(i64, String), (NaiveDate, i64)> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let Ok(customer) = rec[6].parse::<i64>() else {
            continue; // guest checkout
        };
        let day = NaiveDate::parse_from_str(&rec[4][..10], "%Y-%m-%d").unwrap();
        let qty: f64 = rec[3].parse().unwrap();
        let price: f64 = rec[5].parse().unwrap();
        let e = invoices.entry((customer, rec[0].to_string())).or_insert((day, 0));
        e.0 = e.0.min(day);
        e.1 += (qty * price * 100.0).round() as i64;
    }
    let mut by_customer: BTreeMap<i64, ChurnHistory> = BTreeMap::new();
    for ((customer, invoice), (day, fen)) in invoices {
        let h =
            by_customer.entry(customer).or_insert_with(|| ChurnHistory { registered_on: day, ..empty(customer, 0) });
        h.registered_on = h.registered_on.min(day);
        if invoice.starts_with('C') {
            h.refunds.push(DatedAmount { day, amount_fen: fen.abs() });
        } else if fen > 0 {
            h.purchases.push(DatedAmount { day, amount_fen: fen });
        }
    }
    by_customer.into_values().collect()
}

#[test]
fn real_shop_history_beats_chance_out_of_time() {
    let Some(path) = retail_path() else {
        eprintln!("SKIPPED: online_retail.csv.gz not found (set HUIYUAN_DATA_DIR or place shared/data)");
        return;
    };
    let hs = load_retail(&path);
    assert_eq!(hs.len(), 4_372);
    let as_of = NaiveDate::from_ymd_opt(2011, 12, 9).unwrap();
    let m = train_and_evaluate(&hs, as_of, &ChurnParams::default()).unwrap();
    let v = &m.validation;
    eprintln!(
        "online retail: train n={} rate={:.3}; eval n={} rate={:.3}; ROC-AUC={:.4}; PR-AUC={:.4}",
        v.train.members, v.train.positive_rate, v.evaluation.members, v.evaluation.positive_rate, v.roc_auc, v.pr_auc
    );
    assert!(v.roc_auc > 0.7, "roc_auc {}", v.roc_auc);
    assert!(v.pr_auc > v.evaluation.positive_rate + 0.1);
    // No engagement or points in this shop: those features are constant and carry no weight.
    for c in &m.model.features {
        if c.feature.starts_with("views") || c.feature.starts_with("points") {
            assert_eq!((c.sd, c.coefficient), (0.0, 0.0), "{}", c.feature);
        }
    }
    let recency = m.model.features.iter().find(|c| c.feature == "recency_days").unwrap();
    assert!(recency.coefficient > 0.0);
}
