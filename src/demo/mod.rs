//! The demo shop generator: a realistic Chinese e-commerce brand group over two years (catalog, stores,
//! members with personas, seasonal orders, refunds and behaviour events), so a new user sees every
//! screen filled in.
//!
//! Generation is pure and deterministic: everything derives from the seed, the end date and the member's
//! index through per-member random streams, so the shop is built member batch by member batch without
//! holding it in memory, and the same seed always gives the same shop. Writing goes through the same
//! use cases (`App`) as the API and importer, in large batches.

pub mod activity;
pub mod calendar;
pub mod catalog;
pub mod people;
mod rewards;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};

use crate::app::{App, AppError};
use crate::commerce::refund::Refunded;
use crate::commerce::{OrderInput, RefundDraft, RefundInput};
use crate::events::EventInput;
use crate::members::MemberId;
use crate::security::Principal;
use crate::store::{Actor, EventOutcome, WriteOutcome};
pub use activity::{Activity, guest_activity, member_activity};
pub use calendar::Calendar;
pub use catalog::Catalog;
pub use people::{MemberPlan, Persona, plan_member};

/// SKUs per leaf category on average (36 leaves: about 2,000 SKUs).
const SKUS_PER_LEAF: usize = 56;
/// Members per write round: large enough for big transactions, small enough to stream.
const MEMBER_BATCH: usize = 2_000;
/// Orders per `record_orders` call.
const ORDER_BATCH: usize = 5_000;
/// Events per `record_events` call (the API's batch limit).
const EVENT_BATCH: usize = crate::events::MAX_BATCH;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    pub members: usize,
    pub seed: u64,
    /// End of the history: activity covers the two years of Shanghai days before it, so when the CLI
    /// passes today nothing lies in the future.
    pub end: NaiveDate,
    /// Show progress bars (only on a terminal).
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { members: 20_000, seed: 42, end: chrono::Utc::now().date_naive(), progress: false }
    }
}

/// What was written, and how long it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    pub members: u64,
    pub orders: u64,
    pub guest_orders: u64,
    pub refunds: u64,
    pub events: u64,
    pub skus: u64,
    /// Loyalty tasks settled (orders, refunds, earning events, members).
    pub loyalty_tasks: u64,
    /// Ledger entries written by maturing and expiry as of the end.
    pub ledger_jobs: u64,
    /// Rewards members redeemed with their points at the end of the history.
    pub redemptions: u64,
    /// Inputs the use cases refused (a generator bug if not zero; the reasons are logged).
    pub rejected: u64,
    pub elapsed: Duration,
    /// Time per stage: generation (pure) and each kind of write.
    pub stages: Vec<(&'static str, Duration)>,
}

/// A random stream seed for `(seed, index, salt)`: SplitMix64 over the three, so nearby indexes give
/// unrelated streams.
pub fn stream(seed: u64, index: u64, salt: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The fixed part of a demo shop: seed, calendar and catalog.
#[derive(Debug, Clone)]
pub struct Shop {
    pub seed: u64,
    pub calendar: Calendar,
    pub catalog: Catalog,
}

impl Shop {
    /// The shop for `seed` whose history ends the day before `end`.
    pub fn new(seed: u64, end: NaiveDate) -> Shop {
        Shop { seed, calendar: Calendar::new(end), catalog: Catalog::new(seed, SKUS_PER_LEAF) }
    }

    /// Member number `index` (0-based); the store numbers them as it creates them.
    pub fn member(&self, index: usize) -> MemberPlan {
        plan_member(self.seed, index, &self.calendar, &self.catalog)
    }
}

/// Per-stage stopwatch.
#[derive(Default)]
struct Stages(Vec<(&'static str, Duration)>);

impl Stages {
    fn add(&mut self, name: &'static str, since: Instant) {
        let d = since.elapsed();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += d,
            None => self.0.push((name, d)),
        }
    }
}

fn bar(opts: &DemoOptions) -> Option<ProgressBar> {
    opts.progress.then(|| {
        let pb = ProgressBar::new(opts.members as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} members · {msg}")
        {
            pb.set_style(style);
        }
        pb
    })
}

fn note_rejection(summary: &mut DemoSummary, what: &str, reason: &dyn std::fmt::Display) {
    summary.rejected += 1;
    if summary.rejected <= 10 {
        tracing::warn!(%reason, "demo {what} rejected");
    }
}

/// Generate the demo shop into `app`, through its use cases, as the CLI principal.
pub async fn generate(app: &App, opts: &DemoOptions) -> Result<DemoSummary, AppError> {
    let started = Instant::now();
    let who = Principal::cli();
    let mut stages = Stages::default();
    let mut summary = DemoSummary::default();
    let pb = bar(opts);
    // Loyalty work is settled once at the end, each member's ledger loaded once.
    app.defer_loyalty(true);

    let t = Instant::now();
    let shop = Shop::new(opts.seed, opts.end);
    let actor = Actor { id: who.key_id.clone(), at: app.now() };
    for s in &shop.catalog.stores {
        app.store.upsert_store(s, &actor).await?;
    }
    app.store.upsert_skus(&shop.catalog.skus, false).await?;
    summary.skus = shop.catalog.skus.len() as u64;
    stages.add("catalog", t);

    for lo in (0..opts.members).step_by(MEMBER_BATCH) {
        let hi = (lo + MEMBER_BATCH).min(opts.members);
        let t = Instant::now();
        let plans: Vec<MemberPlan> = (lo..hi).map(|i| shop.member(i)).collect();
        let inputs: Vec<_> = plans.iter().map(|p| p.input.clone()).collect();
        stages.add("generate", t);

        let t = Instant::now();
        let outcomes = app.upsert_members(&inputs, &who).await?;
        let mut ids: Vec<Option<MemberId>> = Vec::with_capacity(plans.len());
        for o in outcomes {
            match o {
                Ok(u) => ids.push(u.member_id()),
                Err(e) => {
                    note_rejection(&mut summary, "member", &e);
                    ids.push(None);
                }
            }
        }
        summary.members += ids.iter().flatten().count() as u64;
        stages.add("members", t);

        let t = Instant::now();
        let mut orders: Vec<OrderInput> = Vec::new();
        let mut refunds: Vec<RefundInput> = Vec::new();
        let mut anonymous: Vec<EventInput> = Vec::new();
        let mut events: Vec<EventInput> = Vec::new();
        for (plan, id) in plans.iter().zip(&ids) {
            let mut parts = vec![guest_activity(&shop, plan.index)];
            if let Some(id) = id {
                parts.push(member_activity(&shop, plan, *id));
            }
            for a in parts {
                orders.extend(a.orders);
                refunds.extend(a.refunds);
                anonymous.extend(a.anonymous_events);
                events.extend(a.events);
            }
        }
        stages.add("generate", t);

        let t = Instant::now();
        // Stored order id per (channel, order_no) index into `orders`, for the refunds.
        let mut stored: HashMap<(&str, &str), (usize, i64)> = HashMap::with_capacity(orders.len());
        for (c, chunk) in orders.chunks(ORDER_BATCH).enumerate() {
            for (k, (o, input)) in app.record_orders(chunk, &who).await?.into_iter().zip(chunk).enumerate() {
                let id = match o {
                    WriteOutcome::Created(id) => {
                        if input.member_id.is_some() {
                            summary.orders += 1;
                        } else {
                            summary.guest_orders += 1;
                        }
                        id
                    }
                    WriteOutcome::Duplicate(id) => id,
                    WriteOutcome::Conflict(id) => {
                        note_rejection(&mut summary, "order", &format!("conflicts with order {id}"));
                        continue;
                    }
                    WriteOutcome::Rejected(e) => {
                        note_rejection(&mut summary, "order", &e);
                        continue;
                    }
                };
                stored.insert((&input.channel, &input.order_no), (c * ORDER_BATCH + k, id));
            }
        }
        stages.add("orders", t);

        // Refunds are planned by the same pure rules the store applies (each order has at most one, so
        // nothing is refunded before it) and written in batches.
        let t = Instant::now();
        let now = app.now();
        let mut drafts: Vec<RefundDraft> = Vec::with_capacity(refunds.len());
        for r in &refunds {
            let Some(&(i, order_id)) = stored.get(&(r.channel.as_str(), r.order_no.as_deref().unwrap_or_default()))
            else {
                continue;
            };
            let order = &orders[i];
            let planned = order.validate(&app.config.currency, now).and_then(|d| {
                r.plan(order.member_id, order_id, d.placed_at, &d.lines, d.shipping_fee, &Refunded::default(), 0)
            });
            match planned {
                Ok(d) => drafts.push(d),
                Err(e) => note_rejection(&mut summary, "refund", &e),
            }
        }
        for chunk in drafts.chunks(ORDER_BATCH) {
            for o in app.import_refunds(chunk).await? {
                match o {
                    WriteOutcome::Created(_) => summary.refunds += 1,
                    WriteOutcome::Duplicate(_) => {}
                    WriteOutcome::Conflict(id) => {
                        note_rejection(&mut summary, "refund", &format!("conflicts with refund {id}"))
                    }
                    WriteOutcome::Rejected(e) => note_rejection(&mut summary, "refund", &e),
                }
            }
        }
        stages.add("refunds", t);

        // Anonymous browsing first, so the identified event that links a visitor adopts it.
        let t = Instant::now();
        for chunk in anonymous.chunks(EVENT_BATCH).chain(events.chunks(EVENT_BATCH)) {
            for o in app.record_events(chunk).await? {
                match o {
                    EventOutcome::Stored => summary.events += 1,
                    EventOutcome::Duplicate => {}
                    EventOutcome::Rejected(e) => note_rejection(&mut summary, "event", &e),
                }
            }
        }
        stages.add("events", t);

        if let Some(pb) = &pb {
            pb.set_position(hi as u64);
            pb.set_message(format!("{} orders, {} events", summary.orders + summary.guest_orders, summary.events));
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    // The history through the loyalty program: earn, reverse refunds, then mature and expire as of now.
    let t = Instant::now();
    app.defer_loyalty(false);
    summary.loyalty_tasks = app.settle_loyalty().await?;
    let (_, written) = app.run_ledger_jobs(app.now()).await?;
    summary.ledger_jobs = written;
    stages.add("loyalty", t);
    let t = Instant::now();
    summary.redemptions = rewards::redeem(app, opts.seed).await?;
    stages.add("redemptions", t);
    summary.elapsed = started.elapsed();
    summary.stages = stages.0;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;

    fn end() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    /// Members `0..n` with their activity, as if the store numbered them from 1.
    fn shop(seed: u64, n: usize) -> Vec<(MemberPlan, Activity, Activity)> {
        let shop = Shop::new(seed, end());
        (0..n)
            .map(|i| {
                let p = shop.member(i);
                let a = member_activity(&shop, &p, i as i64 + 1);
                (p, a, guest_activity(&shop, i))
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_shop_and_another_seed_another() {
        let a = shop(7, 150);
        assert_eq!(a, shop(7, 150));
        let b = shop(8, 150);
        assert_ne!(a.iter().map(|x| &x.0.input).collect::<Vec<_>>(), b.iter().map(|x| &x.0.input).collect::<Vec<_>>());
        assert_ne!(a.iter().map(|x| &x.1).collect::<Vec<_>>(), b.iter().map(|x| &x.1).collect::<Vec<_>>());
    }

    #[test]
    fn everything_generated_passes_validation() {
        let now = end().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let mut order_nos = std::collections::HashSet::new();
        for (p, a, g) in shop(3, 300) {
            p.input.validate(now).unwrap();
            for act in [&a, &g] {
                for o in &act.orders {
                    o.validate("CNY", now).unwrap();
                    assert!(order_nos.insert((o.channel.clone(), o.order_no.clone())), "{}", o.order_no);
                }
                for r in &act.refunds {
                    r.validate_header().unwrap();
                    assert!(r.refunded_at < now);
                }
                for e in act.events.iter().chain(&act.anonymous_events) {
                    let d = e.validate(now).unwrap();
                    assert!(d.occurred_at < now, "{e:?}");
                }
            }
        }
    }

    #[test]
    fn personas_differ_in_recency_frequency_and_promotion_use() {
        let data = shop(42, 3000);
        let horizon = Shop::new(42, end()).calendar.horizon();
        let mut by: HashMap<Persona, (usize, usize, usize, usize, f64, i64)> = HashMap::new();
        for (p, a, _) in &data {
            let e = by.entry(p.persona).or_default();
            e.0 += 1;
            e.1 += a.orders.len();
            e.2 += a.orders.iter().filter(|o| o.coupon_code.is_some()).count();
            e.3 += a.events.len() + a.anonymous_events.len();
            if let Some(last) = a.orders.iter().map(|o| o.placed_at).max() {
                e.4 += (horizon - last).num_days() as f64;
            }
            e.5 += a.orders.iter().map(|o| o.total.unwrap_or(0)).sum::<i64>();
        }
        let avg_orders = |p: Persona| by[&p].1 as f64 / by[&p].0 as f64;
        let recency = |p: Persona| by[&p].4 / by[&p].0 as f64;
        let coupon_share = |p: Persona| by[&p].2 as f64 / by[&p].1.max(1) as f64;
        let aov = |p: Persona| by[&p].5 as f64 / by[&p].1.max(1) as f64;
        assert!(avg_orders(Persona::Loyal) > 5.0 * avg_orders(Persona::OneTime), "{by:?}");
        assert!((avg_orders(Persona::OneTime) - 1.0).abs() < 0.05);
        assert_eq!(by[&Persona::Browser].1, 0);
        assert!(by[&Persona::Browser].3 > 0);
        assert!(recency(Persona::Lapsing) > 180.0 && recency(Persona::Loyal) < 60.0, "{by:?}");
        assert!(coupon_share(Persona::Bargain) > 2.0 * coupon_share(Persona::Loyal), "{by:?}");
        assert!(aov(Persona::Loyal) > 1.5 * aov(Persona::Bargain), "{by:?}");
        let events: usize =
            data.iter().map(|(_, a, g)| a.events.len() + a.anonymous_events.len() + g.anonymous_events.len()).sum();
        let per_member = events as f64 / data.len() as f64;
        assert!((35.0..70.0).contains(&per_member), "{per_member} events per member");
    }

    #[test]
    fn refunds_are_about_one_order_in_twenty_and_november_outsells_september() {
        let data = shop(5, 3000);
        let orders: Vec<&OrderInput> = data.iter().flat_map(|(_, a, g)| a.orders.iter().chain(&g.orders)).collect();
        let refunds: usize = data.iter().map(|(_, a, g)| a.refunds.len() + g.refunds.len()).sum();
        let share = refunds as f64 / orders.len() as f64;
        assert!((0.035..0.065).contains(&share), "refund share {share}");
        let in_month =
            |m: u32| orders.iter().filter(|o| (o.placed_at + chrono::Duration::hours(8)).month() == m).count();
        assert!(in_month(11) as f64 > 1.3 * in_month(9) as f64, "Nov {} Sep {}", in_month(11), in_month(9));
        let guests = data.iter().map(|(_, _, g)| g.orders.len()).sum::<usize>();
        assert!(guests > 0 && guests * 4 < orders.len());
    }
}
