use std::collections::BTreeSet;

use approx::assert_abs_diff_eq;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn agg(date: NaiveDate, orders: i64, gmv_fen: i64, buyers: i64, repeat_buyers: i64) -> DailyAggregate {
    DailyAggregate {
        date,
        members_total: 1000,
        new_members: 5,
        active_members: 50,
        orders,
        gmv_fen,
        buyers,
        repeat_buyers,
        points_issued: 100,
        points_redeemed: 10,
    }
}

#[test]
fn derived_ratios_and_rolling_views_by_hand() {
    let d0 = date(2026, 3, 2);
    let mut rows: Vec<DailyAggregate> =
        (0..10).map(|i| agg(d0 + chrono::Days::new(i), 4, 40_000 + 1_000 * i as i64, 3, 1)).collect();
    rows[2].orders = 3;
    rows[2].gmv_fen = 10_000; // AOV 3,333.33 → 3,333
    rows[5].orders = 0;
    rows[5].gmv_fen = 0;
    rows[5].buyers = 0;
    rows[5].repeat_buyers = 0;
    rows.reverse(); // any order is accepted
    let days = daily_kpis(&rows).unwrap();
    assert_eq!(days.len(), 10);
    assert_eq!(days[0].aov_fen, Some(10_000));
    assert_eq!(days[2].aov_fen, Some(3_333));
    assert_eq!(days[5].aov_fen, None);
    assert_eq!(days[5].repurchase_rate, None);
    assert_abs_diff_eq!(days[0].repurchase_rate.unwrap(), 1.0 / 3.0, epsilon = 1e-12);

    // 7 days ending on day 6 (index 6): days 0..=6.
    let r = &days[6].last_7d;
    assert!(r.complete);
    assert_eq!(r.days, 7);
    let gmv: i64 = [40_000, 41_000, 10_000, 43_000, 44_000, 0, 46_000].iter().sum();
    assert_eq!(r.gmv_fen, gmv);
    assert_eq!(r.orders, 4 * 5 + 3);
    assert_eq!(r.aov_fen, Some((gmv as f64 / 23.0).round() as i64));
    assert_eq!((r.buyer_days, r.repeat_buyer_days), (18, 6));
    assert_abs_diff_eq!(r.repurchase_rate.unwrap(), 6.0 / 18.0, epsilon = 1e-12);
    assert_eq!(r.new_members, 35);
    assert_abs_diff_eq!(r.avg_active_members, 50.0, epsilon = 1e-12);
    // The 30-day view on day 3 covers the 4 days the series has.
    assert_eq!((days[3].last_30d.days, days[3].last_30d.complete), (4, false));
}

#[test]
fn gaps_are_filled_with_no_activity() {
    let rows = [agg(date(2026, 3, 1), 2, 5_000, 2, 1), agg(date(2026, 3, 4), 1, 3_000, 1, 0)];
    let days = daily_kpis(&rows).unwrap();
    assert_eq!(days.len(), 4);
    assert!(days[1].filled && days[2].filled && !days[3].filled);
    assert_eq!(days[1].aggregate.orders, 0);
    assert_eq!(days[1].aggregate.members_total, 1000);
    assert_eq!(days[3].last_7d.orders, 3);
}

#[test]
fn invalid_aggregates_are_typed_errors() {
    let d = date(2026, 3, 1);
    assert_eq!(daily_kpis(&[agg(d, 1, 1, 1, 0), agg(d, 1, 1, 1, 0)]), Err(KpiError::DuplicateDate(d)));
    assert!(matches!(daily_kpis(&[agg(d, -1, 1, 1, 0)]), Err(KpiError::InvalidAggregate { .. })));
    assert!(matches!(daily_kpis(&[agg(d, 1, 1, 1, 2)]), Err(KpiError::InvalidAggregate { .. })));
    assert!(matches!(
        daily_kpis(&[agg(d, 1, 1, 1, 0), agg(date(2099, 1, 1), 1, 1, 1, 0)]),
        Err(KpiError::SpanTooLong { .. })
    ));
    assert_eq!(daily_kpis(&[]), Ok(Vec::new()));
    assert_eq!(detect_anomalies(&[], &AnomalyParams::default()), Ok(Vec::new()));
    let bad = AnomalyParams { weeks: 1, ..AnomalyParams::default() };
    assert!(matches!(detect_anomalies(&[], &bad), Err(KpiError::InvalidParam { .. })));
}

/// Monday 2026-01-05 onwards, `weeks` weeks: weekends ×1.7, multiplicative noise ±`noise`, optional
/// weekly growth factor; `inject` multiplies the flows of chosen days.
fn seasonal_series(
    weeks: usize,
    noise: f64,
    growth_per_week: f64,
    inject: &[(usize, f64)],
    seed: u64,
) -> Vec<DailyAggregate> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = date(2026, 1, 5);
    let mut members_total = 5_000;
    (0..weeks * 7)
        .map(|i| {
            let d = start + chrono::Days::new(i as u64);
            let season = if i % 7 >= 5 { 1.7 } else { 1.0 };
            let trend = growth_per_week.powf(i as f64 / 7.0);
            let inj = inject.iter().find(|(j, _)| *j == i).map_or(1.0, |(_, f)| *f);
            let jitter = |rng: &mut ChaCha8Rng, base: f64| {
                (base * season * trend * inj * (1.0 + rng.random_range(-noise..noise))).round() as i64
            };
            let orders = jitter(&mut rng, 200.0);
            let buyers = jitter(&mut rng, 180.0).min(orders);
            let new_members = jitter(&mut rng, 40.0);
            members_total += new_members;
            let aov = 25_000.0 * (1.0 + rng.random_range(-noise..noise));
            let repeat_share = 0.35 * (1.0 + rng.random_range(-noise..noise));
            DailyAggregate {
                date: d,
                members_total,
                new_members,
                active_members: jitter(&mut rng, 600.0),
                orders,
                gmv_fen: (orders as f64 * aov).round() as i64,
                buyers,
                repeat_buyers: (buyers as f64 * repeat_share).round() as i64,
                points_issued: jitter(&mut rng, 50_000.0),
                points_redeemed: jitter(&mut rng, 20_000.0),
            }
        })
        .collect()
}

/// A plain, non-seasonal robust z-score against the previous 28 days (median and MAD), as an oracle
/// for what the weekday-aware detector avoids.
fn naive_alert_days(rows: &[DailyAggregate], threshold: f64) -> Vec<usize> {
    let v: Vec<f64> = rows.iter().map(|r| r.orders as f64).collect();
    (28..v.len())
        .filter(|&t| {
            let (m, s) = robust_center_scale(&v[t - 28..t], 0.0);
            ((v[t] - m) / s).abs() >= threshold
        })
        .collect()
}

#[test]
fn weekly_seasonality_alone_raises_no_alert() {
    let rows = seasonal_series(20, 0.08, 1.0, &[], 1);
    let alerts = detect_anomalies(&rows, &AnomalyParams::default()).unwrap();
    assert!(alerts.is_empty(), "{:#?}", alerts);
    // Without detrending too.
    let raw = AnomalyParams { detrend: false, ..AnomalyParams::default() };
    assert!(detect_anomalies(&rows, &raw).unwrap().is_empty());
    // The non-seasonal z-score flags the weekends of this very series.
    let naive = naive_alert_days(&rows, 3.5);
    let weekend_flags = naive.iter().filter(|&&i| i % 7 >= 5).count();
    assert!(weekend_flags >= 30, "naive flags {naive:?}");
    assert!(naive.iter().all(|&i| i % 7 >= 5), "naive flags weekdays: {naive:?}");
}

#[test]
fn injected_spike_and_drop_are_exactly_the_alerts() {
    // Day 100 is a Wednesday (week 14), day 124 a Saturday (week 17).
    let spike = 100;
    let drop = 124;
    let rows = seasonal_series(20, 0.08, 1.0, &[(spike, 4.0), (drop, 0.3)], 2);
    assert_eq!(rows[spike].date.weekday(), Weekday::Wed);
    assert_eq!(rows[drop].date.weekday(), Weekday::Sat);
    let alerts = detect_anomalies(&rows, &AnomalyParams::default()).unwrap();
    let got: BTreeSet<(NaiveDate, Kpi)> = alerts.iter().map(|a| (a.date, a.kpi)).collect();
    let flows = [
        Kpi::NewMembers,
        Kpi::ActiveMembers,
        Kpi::Orders,
        Kpi::Gmv,
        Kpi::Buyers,
        Kpi::PointsIssued,
        Kpi::PointsRedeemed,
    ];
    let expected: BTreeSet<(NaiveDate, Kpi)> =
        [spike, drop].iter().map(|&i| rows[i].date).flat_map(|d| flows.iter().map(move |&k| (d, k))).collect();
    assert_eq!(got, expected);
    let gmv_up = alerts.iter().find(|a| a.kpi == Kpi::Gmv && a.date == rows[spike].date).unwrap();
    assert_eq!(gmv_up.direction, Direction::Up);
    assert!(gmv_up.detrended);
    assert_eq!(gmv_up.baseline.len(), 8);
    let ratio = gmv_up.value / gmv_up.expected;
    assert!((3.4..4.6).contains(&ratio), "{ratio}");
    assert!(gmv_up.message.starts_with(&format!("GMV on {} is ", rows[spike].date)), "{}", gmv_up.message);
    assert!(gmv_up.message.contains("× the usual Wednesday (expected ¥"), "{}", gmv_up.message);
    let orders_down = alerts.iter().find(|a| a.kpi == Kpi::Orders && a.date == rows[drop].date).unwrap();
    assert_eq!(orders_down.direction, Direction::Down);
    assert!(orders_down.z <= -3.5);
    // Expected is the usual Saturday (≈ 340 orders), not the weekday level.
    assert!((300.0..380.0).contains(&orders_down.expected), "{}", orders_down.expected);
    assert!(orders_down.message.contains("% below the usual Saturday"), "{}", orders_down.message);

    // alerts_from limits reporting to recent days.
    let recent = AnomalyParams { alerts_from: Some(rows[spike + 1].date), ..AnomalyParams::default() };
    let later = detect_anomalies(&rows, &recent).unwrap();
    assert!(later.iter().all(|a| a.date == rows[drop].date));
    assert_eq!(later.len(), flows.len());
}

#[test]
fn the_message_names_the_ratio_and_both_amounts() {
    // Constant GMV of ¥120,300 a day; 2026-11-11 (a Wednesday) brings ¥505,200 = 4.2×.
    let d11 = date(2026, 11, 11);
    let rows: Vec<DailyAggregate> = (0..7 * 12)
        .map(|i| {
            let d = d11 - chrono::Days::new(7 * 12 - 1 - i);
            let gmv = if d == d11 { 50_520_000 } else { 12_030_000 };
            agg(d, 100, gmv, 90, 30)
        })
        .collect();
    let params = AnomalyParams {
        monitors: vec![KpiMonitor { kpi: Kpi::Gmv, min_abs_change: 100_000.0 }],
        ..AnomalyParams::default()
    };
    let alerts = detect_anomalies(&rows, &params).unwrap();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.message, "GMV on 2026-11-11 is 4.2× the usual Wednesday (expected ¥120,300, got ¥505,200)");
    assert_eq!(a.expected, 12_030_000.0);
    // References all equal: MAD = meanAD = 0 and the scale is the 1% floor of the expected value.
    assert_abs_diff_eq!(a.z, (50_520_000.0 - 12_030_000.0) / 120_300.0, epsilon = 1e-6);
}

#[test]
fn short_history_never_alerts_and_the_boundary_is_w_weeks() {
    // Constant 200 orders a day, then a 5× spike on the first day with 8 full weeks behind it.
    let start = date(2026, 1, 5);
    let make = |len: usize, spike_at: usize| -> Vec<DailyAggregate> {
        (0..len)
            .map(|i| {
                let o = if i == spike_at { 1_000 } else { 200 };
                agg(start + chrono::Days::new(i as u64), o, o * 25_000, o, o / 3)
            })
            .collect()
    };
    let orders_only = AnomalyParams {
        monitors: vec![KpiMonitor { kpi: Kpi::Orders, min_abs_change: 10.0 }],
        ..AnomalyParams::default()
    };
    // Day 55 has only 7 weeks (and 6 days) before it.
    assert!(detect_anomalies(&make(56, 55), &orders_only).unwrap().is_empty());
    // Day 56 has exactly 8.
    let alerts = detect_anomalies(&make(57, 56), &orders_only).unwrap();
    assert_eq!(alerts.len(), 1);
    assert!(!alerts[0].detrended, "8 weeks are not enough for a 28-day level before the first reference");
    assert_eq!(alerts[0].expected, 200.0);
}

#[test]
fn zero_and_constant_series_do_not_panic_or_alert() {
    let start = date(2026, 1, 5);
    let zeros: Vec<DailyAggregate> = (0..140).map(|i| DailyAggregate::quiet(start + chrono::Days::new(i), 0)).collect();
    assert!(detect_anomalies(&zeros, &AnomalyParams::default()).unwrap().is_empty());
    let constant: Vec<DailyAggregate> =
        (0..140).map(|i| agg(start + chrono::Days::new(i), 50, 1_250_000, 45, 15)).collect();
    assert!(detect_anomalies(&constant, &AnomalyParams::default()).unwrap().is_empty());

    // A zero series that suddenly has orders: expected 0, z capped, message without a ratio.
    let mut woke = zeros.clone();
    woke[139].orders = 30;
    woke[139].buyers = 30;
    woke[139].gmv_fen = 600_000;
    let alerts = detect_anomalies(&woke, &AnomalyParams::default()).unwrap();
    let kinds: Vec<Kpi> = alerts.iter().map(|a| a.kpi).collect();
    assert_eq!(kinds, [Kpi::Orders, Kpi::Gmv, Kpi::Buyers]);
    assert!(alerts.iter().all(|a| a.z == Z_CAP && a.expected == 0.0 && !a.detrended));
    assert!(alerts[0].message.contains("up from the usual Sunday's 0"), "{}", alerts[0].message);
    // A tiny shop: 0 → 3 orders is under the minimum change and is not news.
    let mut tiny = zeros;
    tiny[139].orders = 3;
    tiny[139].buyers = 3;
    tiny[139].gmv_fen = 30_000;
    assert!(detect_anomalies(&tiny, &AnomalyParams::default()).unwrap().is_empty());
}

#[test]
fn scale_falls_back_from_mad_to_mean_absolute_deviation() {
    // Seven equal references and one outlier: MAD = 0, meanAD = 30/8 = 3.75, scale = 1.2533 × 3.75.
    let (m, s) = robust_center_scale(&[10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 40.0], 0.0);
    assert_eq!(m, 10.0);
    assert_abs_diff_eq!(s, 1.2533 * 3.75, epsilon = 1e-12);
    // Normal spread: 1.4826 × MAD. refs 1..=8: median 4.5, deviations 3.5 2.5 1.5 .5 .5 1.5 2.5 3.5 → MAD 2.
    let refs: Vec<f64> = (1..=8).map(f64::from).collect();
    let (m, s) = robust_center_scale(&refs, 0.0);
    assert_eq!(m, 4.5);
    assert_abs_diff_eq!(s, 1.4826 * 2.0, epsilon = 1e-12);
    // One far outlier does not widen the scale: seven values near 10 and 1000 → median 10, MAD 0.5.
    let (m, s) = robust_center_scale(&[9.0, 10.0, 10.0, 11.0, 10.0, 9.5, 10.5, 1000.0], 0.0);
    assert_eq!(m, 10.0);
    assert_abs_diff_eq!(s, 1.4826 * 0.5, epsilon = 1e-12);
    // No spread at all: the floor.
    let (_, s) = robust_center_scale(&[0.0; 8], 0.01);
    assert_eq!(s, 1e-9);
}

#[test]
fn detrending_keeps_the_detector_sensitive_in_a_growing_shop() {
    // 6% growth a week for 24 weeks, ±3% noise, and a 1.3× day late on (day 150, a Thursday).
    let rows = seasonal_series(24, 0.03, 1.06, &[(150, 1.3)], 300);
    let orders = AnomalyParams {
        monitors: vec![KpiMonitor { kpi: Kpi::Orders, min_abs_change: 10.0 }],
        ..AnomalyParams::default()
    };
    let found = detect_anomalies(&rows, &orders).unwrap();
    let dates: Vec<NaiveDate> = found.iter().map(|a| a.date).collect();
    assert_eq!(dates, [rows[150].date]);
    assert!(found[0].detrended && found[0].z > 10.0, "{:?}", found[0]);
    // Expected tracks the current level: the day was 1.3× what growth alone would give.
    assert!((1.2..1.4).contains(&(found[0].value / found[0].expected)), "{:?}", found[0]);
    // On raw values the eight previous Thursdays are spread by the growth itself, which hides the day.
    let raw = AnomalyParams { detrend: false, ..orders };
    assert!(detect_anomalies(&rows, &raw).unwrap().is_empty());
}

#[test]
fn false_alert_rate_is_near_the_nominal_rate() {
    // Over many seeds of anomaly-free series (flat and growing), the share of judged KPI-days that alert
    // stays near what |z| ≥ 3.5 gives for normal noise (0.05%); 0.2% is the bound.
    let mut alerts = 0;
    let mut judged = 0;
    for seed in 0..8 {
        let flat = seasonal_series(20, 0.08, 1.0, &[], 100 + seed);
        let growing = seasonal_series(20, 0.03, 1.06, &[], 200 + seed);
        for rows in [flat, growing] {
            alerts += detect_anomalies(&rows, &AnomalyParams::default()).unwrap().len();
            judged += (rows.len() - 56) * 9;
        }
    }
    assert!((alerts as f64) < 0.002 * judged as f64, "{alerts} alerts in {judged} KPI-days");
}

#[test]
fn rate_kpis_skip_days_without_a_denominator() {
    // AOV on a shop with no orders on Sundays: Sundays are never judged, other days are.
    let start = date(2026, 1, 5);
    let rows: Vec<DailyAggregate> = (0..120)
        .map(|i| {
            let o = if i % 7 == 6 { 0 } else { 50 };
            let aov = if i == 115 { 90_000 } else { 25_000 };
            agg(start + chrono::Days::new(i), o, o * aov, o, o / 3)
        })
        .collect();
    let params = AnomalyParams {
        monitors: vec![KpiMonitor { kpi: Kpi::Aov, min_abs_change: 2_000.0 }],
        ..AnomalyParams::default()
    };
    let alerts = detect_anomalies(&rows, &params).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].date, rows[115].date);
    assert!(alerts[0].message.starts_with(&format!("AOV on {} is 3.6× the usual", rows[115].date)));
    assert!(alerts[0].message.ends_with("(expected ¥250.00, got ¥900.00)"), "{}", alerts[0].message);
}

#[test]
fn money_and_counts_format_with_thousands_separators() {
    assert_eq!(yuan(12_030_000.0, 0), "¥120,300");
    assert_eq!(yuan(123_456.0, 2), "¥1,234.56");
    assert_eq!(yuan(50.0, 2), "¥0.50");
    assert_eq!(Kpi::Orders.format(1_234_567.0), "1,234,567");
    assert_eq!(Kpi::RepurchaseRate.format(0.125), "12.5%");
}

/// Cost of anomaly detection: 3 years of days, 9 KPIs.
/// `cargo test --release -p huiyuan-analytics kpis::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_detect() {
    let rows = seasonal_series(156, 0.08, 1.0, &[(500, 3.0)], 9);
    let start = std::time::Instant::now();
    let alerts = detect_anomalies(&rows, &AnomalyParams::default()).unwrap();
    println!("{} days x 9 KPIs: {:.1} ms, {} alerts", rows.len(), start.elapsed().as_secs_f64() * 1e3, alerts.len());
}
