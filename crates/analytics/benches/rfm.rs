//! Timing of the member-level kernels on 1,000,000 synthetic members: RFM, lifecycle, purchase cycle.
//!
//! Run: `cargo bench -p huiyuan-analytics --bench rfm` (optionally `-- <members>`). Prints wall-clock
//! seconds per kernel; the synthetic data come from a seeded RNG, so every run sees the same members.

use std::time::Instant;

use chrono::{Days, NaiveDate};
use huiyuan_analytics::cycle::{CycleInput, CycleParams, purchase_cycles};
use huiyuan_analytics::lifecycle::{LifecycleInput, LifecycleParams, classify, transitions};
use huiyuan_analytics::rfm::{RfmInput, RfmParams, rfm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Process CPU seconds (user + system) from /proc/self/stat, so figures stay meaningful on a busy
/// machine where wall time mostly measures other processes; None off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based) -> indexes 11, 12 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on every mainstream Linux
}

/// Wall and CPU seconds since a start point.
struct Timer(Instant, Option<f64>);

impl Timer {
    fn start() -> Self {
        Self(Instant::now(), cpu_seconds())
    }
    fn wall(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    fn cpu(&self) -> f64 {
        match (self.1, cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        }
    }
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 31).expect("valid date");
    let back = |d: u64| as_of.checked_sub_days(Days::new(d)).expect("in range");
    let mut rng = ChaCha8Rng::seed_from_u64(20_240_531);

    let t = Instant::now();
    let mut rfm_in = Vec::with_capacity(n);
    let mut life_in = Vec::with_capacity(n);
    let mut cyc_in = Vec::with_capacity(n);
    let mut total_days = 0usize;
    for id in 0..n as i64 {
        let registered = back(rng.random_range(0..1500));
        let reg_age = (as_of - registered).num_days() as u64;
        // 25% never bought; the rest have 1..=12 purchase days spread over their membership.
        let buyer = rng.random_bool(0.75);
        let k = if buyer { rng.random_range(1..=12usize) } else { 0 };
        let mut days: Vec<NaiveDate> = (0..k).map(|_| back(rng.random_range(0..=reg_age))).collect();
        days.sort_unstable();
        total_days += days.len();
        let first = days.first().copied();
        let last = days.last().copied();
        let in_window = days.iter().filter(|&&d| (as_of - d).num_days() < 365).count() as u32;
        rfm_in.push(RfmInput {
            member_id: id,
            last_purchase: last,
            orders: in_window,
            monetary_fen: i64::from(in_window) * rng.random_range(2_000..80_000),
        });
        life_in.push(LifecycleInput {
            member_id: id,
            registered,
            first_purchase: first,
            last_purchase: last,
            last_activity: Some(back(rng.random_range(0..=reg_age))),
        });
        cyc_in.push(CycleInput { member_id: id, purchase_days: days, categories: Vec::new() });
    }
    println!("generated {n} members ({total_days} purchase days) in {:.2}s", t.elapsed().as_secs_f64());

    let t = Timer::start();
    let r = rfm(&rfm_in, as_of, &RfmParams::default());
    let (t_rfm, c_rfm) = (t.wall(), t.cpu());
    println!("rfm: {t_rfm:.3}s wall, {c_rfm:.2}s cpu ({} scored, {} unscored)", r.summary.scored, r.summary.unscored);

    let t = Timer::start();
    let now = classify(&life_in, as_of, &LifecycleParams::default()).expect("valid params");
    let earlier =
        classify(&life_in, as_of.checked_sub_days(Days::new(90)).expect("in range"), &LifecycleParams::default())
            .expect("valid params");
    let map = |v: &[huiyuan_analytics::lifecycle::LifecycleResult]| -> Vec<_> {
        v.iter().filter_map(|r| r.stage.map(|s| (r.member_id, s))).collect()
    };
    let tr = transitions(&map(&earlier), &map(&now)).expect("unique ids");
    let (t_life, c_life) = (t.wall(), t.cpu());
    println!(
        "lifecycle (two days + transition matrix): {t_life:.3}s wall, {c_life:.2}s cpu ({} in both, {} changed)",
        tr.in_both, tr.changed
    );

    let t = Timer::start();
    let c = purchase_cycles(&cyc_in, as_of, &CycleParams::default()).expect("valid params");
    let (t_cyc, c_cyc) = (t.wall(), t.cpu());
    let est = c.iter().filter(|r| r.overall.is_some()).count();
    let due = c.iter().filter(|r| r.overall.as_ref().is_some_and(|e| e.due)).count();
    println!("cycle: {t_cyc:.3}s wall, {c_cyc:.2}s cpu ({est} with an estimate, {due} due)");
    println!(
        "total rfm + lifecycle + cycle: {:.3}s wall, {:.2}s cpu, on {} threads",
        t_rfm + t_life + t_cyc,
        c_rfm + c_life + c_cyc,
        rayon::current_num_threads()
    );
}
