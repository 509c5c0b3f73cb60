//! Journey analytics at scale: a seeded synthetic shop (default 1,000,000 members, about 20,000,000
//! events over 2024) run through the funnel (per member and per session), the top paths to purchase and
//! the monthly cohorts with the repurchase rate. Prints the time of each stage.
//!
//! `cargo bench -p huiyuan-analytics --bench journeys`; `JOURNEYS_MEMBERS=100000` for a smaller run.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use huiyuan_analytics::cohorts::{CohortParams, MemberPurchaseDays, cohort_report};
use huiyuan_analytics::funnels::paths::{PathParams, top_paths};
use huiyuan_analytics::funnels::{CountingUnit, Event, FunnelDefinition, FunnelExclusion, FunnelStep, funnel_report};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

const BROWSE: [&str; 4] = ["page_view", "search", "product_view", "campaign_click"];
const FUNNEL: [&str; 4] = ["product_view", "add_to_cart", "checkout", "purchase"];

/// One member's shuffled events: 1–5 sessions of 2–14 events each, a browse-or-advance walk through
/// the purchase funnel, 10 % of sessions without a session id (store or call-centre channels).
fn member_events(rng: &mut ChaCha8Rng, member_id: i64, start: DateTime<Utc>, out: &mut Vec<Event>) {
    let first = out.len();
    let sessions = rng.random_range(1..=5);
    for s in 0..sessions {
        let mut at = start
            + Duration::seconds(rng.random_range(0..366 * 86_400))
            + Duration::milliseconds(rng.random_range(0..1000));
        let session = (rng.random::<f64>() >= 0.1).then(|| format!("{member_id}-{s}"));
        let len = rng.random_range(2..=14);
        let mut stage = 0usize;
        for _ in 0..len {
            let event_type = if rng.random::<f64>() < 0.35 {
                let t = FUNNEL[stage];
                stage += 1;
                t
            } else if stage >= 2 && rng.random::<f64>() < 0.08 {
                stage = 1;
                "remove_from_cart"
            } else {
                BROWSE[rng.random_range(0..BROWSE.len())]
            };
            let mut e = Event::new(member_id, at, event_type);
            if let Some(s) = &session {
                e.session_id = Some(s.clone());
            }
            if matches!(event_type, "product_view" | "add_to_cart" | "purchase") {
                e.sku = Some(format!("SKU-{:04}", rng.random_range(0..500)));
            }
            out.push(e);
            if stage == FUNNEL.len() {
                break;
            }
            at += Duration::seconds(rng.random_range(5..300));
        }
    }
    out[first..].shuffle(rng);
}

/// CPU seconds used so far by the whole process (all threads), from `/proc/self/stat` (Linux; 0 elsewhere).
/// On a shared machine the wall time of a stage depends on the other load, its CPU time much less.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    // After the command name: state is field 3, utime field 14, stime field 15 (clock ticks, 100 per s).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// Wall and CPU time since a mark.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Self {
        Clock(Instant::now(), cpu_secs())
    }
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s wall, {:.2} s CPU", self.0.elapsed().as_secs_f64(), cpu_secs() - self.1)
    }
}

fn definition(counting: CountingUnit) -> FunnelDefinition {
    let mut steps: Vec<FunnelStep> = FUNNEL.iter().map(|t| FunnelStep::on(*t)).collect();
    steps[1].max_secs_from_previous = Some(86_400);
    FunnelDefinition {
        exclusions: vec![FunnelExclusion {
            event_type: "remove_from_cart".into(),
            sku: None,
            properties: Vec::new(),
            after_step: 1,
            before_step: 3,
        }],
        counting,
        ..FunnelDefinition::new(steps)
    }
}

fn main() {
    let members: i64 = std::env::var("JOURNEYS_MEMBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(20_240_101);

    let t = Clock::start();
    let mut events = Vec::with_capacity(usize::try_from(members).unwrap_or(0) * 21);
    for m in 0..members {
        member_events(&mut rng, m, start, &mut events);
    }
    println!(
        "generated {members} members, {} events in {t} (rayon threads: {})",
        events.len(),
        rayon::current_num_threads()
    );

    for counting in [CountingUnit::Member, CountingUnit::Session] {
        let t = Clock::start();
        let r = funnel_report(&events, &definition(counting)).expect("valid funnel");
        let el = t.to_string();
        let counts: Vec<u64> = r.steps.iter().map(|s| s.entered).collect();
        println!(
            "funnel ({counting:?}): {}  units {}  entered {counts:?}  median add_to_cart→checkout {:?} s",
            el, r.units_total, r.steps[2].median_secs_from_previous
        );
    }

    let t = Clock::start();
    let p = top_paths(&events, &PathParams::default()).expect("valid params");
    println!(
        "paths: {t}  {} purchases, {} distinct paths, top: {} ({:.1}%)",
        p.target_events,
        p.distinct_paths,
        p.paths.first().map_or("-", |x| x.label.as_str()),
        p.paths.first().map_or(0.0, |x| x.share * 100.0)
    );

    let t = Clock::start();
    let mut buyers: Vec<MemberPurchaseDays> = Vec::new();
    for run in events.chunk_by(|a, b| a.member_id == b.member_id) {
        let times = run.iter().filter(|e| e.event_type == "purchase").map(|e| e.at);
        buyers.push(MemberPurchaseDays::from_times(run[0].member_id, times));
    }
    let prep = t.to_string();
    let t = Clock::start();
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 15).expect("date");
    let c = cohort_report(&buyers, as_of, &CohortParams::default());
    println!(
        "cohorts: {t} (+{prep} building purchase days)  {} cohorts, first cohort size {}, month-1 share {:?}, repurchase {:?} / within 90 d {:?}",
        c.cohorts.len(),
        c.cohorts.first().map_or(0, |r| r.size),
        c.cohorts.first().and_then(|r| r.cells.get(1)).and_then(|x| x.active_share),
        c.repurchase.rate,
        c.repurchase.rate_within_window
    );
}
