//! Timings of the model kernels at shop scale: churn training + scoring and behaviour clustering.
//!
//! `cargo bench -p huiyuan-analytics --bench models` (release). Sizes: `BENCH_MEMBERS` (default
//! 1,000,000). `BENCH_LINFA_SILHOUETTE=1` also times linfa's own silhouette on the 10,000-row sample,
//! for comparison with ours. Data is synthetic and seeded; generation time is not counted.

use std::time::Instant;

use chrono::{Days, NaiveDate};
use huiyuan_analytics::churn::{
    ChurnHistory, ChurnParams, DatedAmount, EngagementKind, EngagementRecord, PointsMovement, train_and_evaluate,
};
use huiyuan_analytics::clusters::{ClusterInput, ClusterParams, cluster};
use linfa::DatasetBase;
use linfa::metrics::SilhouetteScore;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng as _;
use rayon::prelude::*;

const AS_OF: i64 = 720;

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2022, 1, 1)
        .and_then(|d| d.checked_add_days(Days::new(n.max(0) as u64)))
        .unwrap_or(NaiveDate::MIN)
}

/// Poisson arrivals on [from, to) at rate `max * fade(t)`, by thinning.
fn arrivals(rng: &mut ChaCha8Rng, from: i64, to: i64, max: f64, fade: &dyn Fn(f64) -> f64) -> Vec<i64> {
    let gap = Exp::new(max).unwrap_or_else(|_| Exp::new(1.0).unwrap_or_else(|_| unreachable!()));
    let mut t = from as f64;
    let mut out = Vec::new();
    loop {
        t += gap.sample(rng);
        if t >= to as f64 {
            return out;
        }
        if rng.random::<f64>() < fade(t) {
            out.push(t as i64);
        }
    }
}

/// Members whose purchases and engagement fade before a random lapse day.
fn histories(n: usize) -> Vec<ChurnHistory> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(0xC0FFEE ^ i as u64);
            let registered = rng.random_range(0..200);
            let base = rng.random_range(1.0 / 90.0..1.0 / 20.0);
            let lapse = rng.random_range(150.0..1100.0);
            let fade = move |t: f64| if t >= lapse { 0.0 } else { ((lapse - t) / 150.0).min(1.0) };
            let mut h = ChurnHistory {
                member_id: i as i64,
                registered_on: day(registered),
                purchases: Vec::new(),
                refunds: Vec::new(),
                engagement: Vec::new(),
                points: Vec::new(),
            };
            for d in arrivals(&mut rng, registered, AS_OF + 1, base, &fade) {
                let fen = rng.random_range(2_000..40_000);
                h.purchases.push(DatedAmount { day: day(d), amount_fen: fen });
                h.points.push(PointsMovement { day: day(d), points: fen / 100 });
                if rng.random_bool(0.05) {
                    h.refunds.push(DatedAmount { day: day(d + 3), amount_fen: fen / 2 });
                }
            }
            for d in arrivals(&mut rng, registered, AS_OF + 1, 0.04, &fade) {
                let kind = match rng.random_range(0..10) {
                    0..=5 => EngagementKind::View,
                    6 | 7 => EngagementKind::Cart,
                    8 => EngagementKind::CheckIn,
                    _ => EngagementKind::CampaignClick,
                };
                h.engagement.push(EngagementRecord { day: day(d), kind, count: rng.random_range(1..5) });
            }
            h
        })
        .collect()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// CPU seconds (user + system, all threads) this process has used so far, from /proc/self/stat, so
/// figures stay meaningful on a machine shared with other work. NaN where unavailable.
fn cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // After the command name: state is field 0, utime field 11, stime field 12 (clock ticks, 100/s).
    (tick(11) + tick(12)) / 100.0
}

/// "wall W s, CPU C s" since (`t`, `c0`).
fn took(t: Instant, c0: f64) -> String {
    format!("wall {:.2}s, CPU {:.2}s", secs(t), cpu() - c0)
}

fn bench_churn(n: usize) {
    let (t, c0) = (Instant::now(), cpu());
    let hs = histories(n);
    let records: usize =
        hs.iter().map(|h| h.purchases.len() + h.refunds.len() + h.engagement.len() + h.points.len()).sum();
    println!("churn: generated {n} members, {records} records in {} (not counted)", took(t, c0));
    let (t, c0) = (Instant::now(), cpu());
    let model = match train_and_evaluate(&hs, day(AS_OF), &ChurnParams::default()) {
        Ok(m) => m,
        Err(e) => {
            println!("churn: training failed: {e}");
            return;
        }
    };
    let train = took(t, c0);
    let v = &model.validation;
    println!(
        "churn: train_and_evaluate {train} — train n={} rate={:.3}, eval n={} rate={:.3}, ROC-AUC={:.4}, PR-AUC={:.4}",
        v.train.members, v.train.positive_rate, v.evaluation.members, v.evaluation.positive_rate, v.roc_auc, v.pr_auc
    );
    let (t, c0) = (Instant::now(), cpu());
    let scores = model.score_all(&hs, day(AS_OF)).unwrap_or_default();
    println!("churn: score_all {} for {} members", took(t, c0), scores.len());
    if let Some(s) = scores.first() {
        println!(
            "churn: e.g. member {} p={:.3} reasons {:?}",
            s.member_id,
            s.probability,
            s.top_reasons.iter().map(|r| r.text.as_str()).collect::<Vec<_>>()
        );
    }
}

fn bench_clusters(n: usize) {
    const D: usize = 7;
    let centres = [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [3.0, -2.0, -2.0, 0.0, 0.0, -1.0, -2.0],
        [-1.5, 3.0, 3.0, 1.0, 0.0, 2.0, 2.0],
        [0.0, 1.0, 0.5, -1.5, 3.0, 0.0, 1.0],
        [-1.0, -1.0, 2.0, 3.0, -1.0, 1.0, 0.0],
    ];
    let names = ["recency", "frequency", "monetary", "aov", "discount_share", "category_breadth", "engagement"];
    let values: Vec<f64> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(0xBEEF ^ i as u64);
            let noise = Normal::new(0.0, 0.8).unwrap_or_else(|_| unreachable!());
            let c = centres[i % centres.len()];
            (0..D).map(move |j| c[j] * 10.0 + 50.0 + noise.sample(&mut rng) * 6.0).collect::<Vec<_>>()
        })
        .collect();
    let input = ClusterInput {
        feature_names: names.iter().map(|s| s.to_string()).collect(),
        member_ids: (0..n as i64).collect(),
        values,
    };
    let p = ClusterParams::default();
    let (t, c0) = (Instant::now(), cpu());
    match cluster(&input, &p) {
        Ok(r) => {
            println!("clusters: cluster() {n}x{D} with k selection: {} → k={}", took(t, c0), r.k);
            println!(
                "clusters: silhouettes {:?}",
                r.selection.iter().map(|s| (s.k, (s.silhouette * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
            );
            for c in &r.clusters {
                println!("clusters:   #{} size {} — {}", c.id, c.size, c.description);
            }
        }
        Err(e) => println!("clusters: failed: {e}"),
    }
    let fixed = ClusterParams { k: Some(5), ..p.clone() };
    let (t, c0) = (Instant::now(), cpu());
    if let Ok(r) = cluster(&input, &fixed) {
        println!(
            "clusters: cluster() with fixed k=5 (sample restarts + full refine + assign): {}, inertia {:.3}",
            took(t, c0),
            r.inertia
        );
    }
    // linfa's k-means from scratch on all rows (k-means++ seeding, one run), for comparison.
    let x = match Array2::from_shape_vec((n, D), input.values.clone()) {
        Ok(x) => x,
        Err(_) => return,
    };
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap_or_else(|| Array1::zeros(D));
    let sd = x.std_axis(ndarray::Axis(0), 0.0);
    let z = (&x - &mean) / &sd;
    let (t, c0) = (Instant::now(), cpu());
    let ds = DatasetBase::from(z.clone());
    if let Ok(m) = KMeans::params_with_rng(5, Xoshiro256Plus::seed_from_u64(1)).n_runs(1).fit(&ds) {
        let labels: Array1<usize> = m.predict(&z);
        println!(
            "clusters: linfa KMeans from scratch (k-means++, 1 run) on {n}x{D}: {}, inertia {:.3}, sizes {:?}",
            took(t, c0),
            m.inertia(),
            (0..5).map(|c| labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>()
        );
    }
    if std::env::var("BENCH_LINFA_SILHOUETTE").is_ok() {
        let m = n.min(10_000);
        let sample = z.slice(ndarray::s![..m, ..]).to_owned();
        let labels = Array1::from_iter((0..m).map(|i| i % 5));
        let (t, c0) = (Instant::now(), cpu());
        let s: f64 = DatasetBase::new(sample, labels).silhouette_score().unwrap_or(f64::NAN);
        println!("clusters: linfa silhouette_score on {m} rows: {} (value {s:.3})", took(t, c0));
    }
}

fn main() {
    let n = std::env::var("BENCH_MEMBERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    println!("threads: {}", rayon::current_num_threads());
    bench_churn(n);
    bench_clusters(n);
}
