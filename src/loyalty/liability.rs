//! Points liability (积分负债): what the programme owes its members and how that debt moved. Pure: members'
//! ledgers and tiers in, a report out; no I/O, no clock (the caller gives `as_of`), no floats for points or
//! money.
//!
//! # What is counted
//!
//! * **Outstanding** is every points lot's remainder as of the ledger's last entry, pending and available
//!   apart, grouped by the local month in which the lot expires (`never` for lots without expiry) and by
//!   the member's tier. A lot already past its expiry that the expiry job has not reached yet still counts
//!   (it is owed until the job runs), under its past month, so the report matches the balances members see.
//! * **Debt** is a negative available balance beyond what the lots hold (a refund clawback after the points
//!   were spent, under the allow-negative policy): it reduces what is owed, and is reported on its own.
//! * **Flows** per local calendar month of the business time zone, from the points wallet's entries:
//!   issued (lots opened by earning, including points given back by a cancelled redemption), redeemed,
//!   expired, reversed by refunds (while pending or after), and operator adjustments (net). Maturing moves
//!   points between buckets and is not a flow. Voided entries never count.
//! * **Cost** turns points into money at the programme's redemption rate, `cost_per_100_points_fen` fen
//!   per 100 points, rounded down per figure.
//!
//! The report is accumulated member by member ([`LiabilityBuilder::add`]) so a shop of any size streams
//! through it in batches.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::ledger::{Entry, Kind, Ledger, State, Wallet};

/// The month label of lots that never expire.
pub const NEVER: &str = "never";

/// The report's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub as_of: DateTime<Utc>,
    /// Flows are reported for entries at or after `from` and before `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: Tz,
    pub cost_per_100_points_fen: i64,
}

/// Outstanding points in lots expiring in one month, held by members of one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OutstandingRow {
    /// `YYYY-MM` in the business time zone, or `never`.
    pub expiry_month: String,
    pub tier: String,
    pub available: i64,
    pub pending: i64,
    /// Members holding points in this cell.
    pub members: u64,
    /// `available + pending` at the redemption rate, in fen.
    pub cost_fen: i64,
}

/// How the points wallet moved in one month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct FlowRow {
    /// `YYYY-MM` in the business time zone.
    pub month: String,
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// Clawed back by refunds.
    pub reversed: i64,
    /// Operator adjustments, net (negative when more was taken than given).
    pub adjusted: i64,
}

/// Totals of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct LiabilityTotals {
    pub available: i64,
    pub pending: i64,
    /// Sum of negative balances beyond the lots (≤ 0).
    pub debt: i64,
    /// Members with any outstanding points.
    pub members_with_points: u64,
    pub members_in_debt: u64,
    /// `available + pending + debt`: what the programme owes.
    pub outstanding: i64,
    /// `outstanding` at the redemption rate, in fen.
    pub cost_fen: i64,
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    pub reversed: i64,
    pub adjusted: i64,
}

/// The liability report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Liability {
    pub as_of: DateTime<Utc>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub time_zone: String,
    pub cost_per_100_points_fen: i64,
    pub members: u64,
    pub totals: LiabilityTotals,
    /// By expiry month, then tier.
    pub outstanding: Vec<OutstandingRow>,
    /// Month by month, oldest first; months without movement are left out.
    pub flows: Vec<FlowRow>,
}

/// Accumulates the report over members.
#[derive(Debug, Clone)]
pub struct LiabilityBuilder {
    params: Params,
    members: u64,
    totals: LiabilityTotals,
    cells: BTreeMap<(String, String), (i64, i64, u64)>,
    flows: BTreeMap<String, FlowRow>,
}

/// Points at the redemption rate, floored.
pub fn cost_fen(points: i64, cost_per_100_points_fen: i64) -> i64 {
    let v = i128::from(points) * i128::from(cost_per_100_points_fen);
    i64::try_from(v.div_euclid(100)).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn month_of(at: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    format!("{:04}-{:02}", local.year(), local.month())
}

/// Whether an entry opens its own lot (an earn or a positive adjustment), as opposed to moving one.
fn opens_lot(e: &Entry) -> bool {
    e.lot.as_ref().is_some_and(|l| l.0 == e.key)
}

impl LiabilityBuilder {
    pub fn new(params: Params) -> Self {
        Self { params, members: 0, totals: LiabilityTotals::default(), cells: BTreeMap::new(), flows: BTreeMap::new() }
    }

    /// Add one member: their ledger (rebuilt from entries) and tier code.
    pub fn add(&mut self, ledger: &Ledger, tier: &str) {
        let p = &self.params;
        self.members += 1;
        let mut held = false;
        let mut in_lots = 0i64;
        let mut member_cells: Vec<(String, i64, i64)> = Vec::new();
        for lot in ledger.lots().iter().filter(|l| l.wallet == Wallet::Points) {
            in_lots += lot.available;
            if lot.available == 0 && lot.pending == 0 {
                continue;
            }
            held = true;
            let month = lot.expires_at.map_or_else(|| NEVER.to_string(), |t| month_of(t, p.tz));
            match member_cells.iter_mut().find(|c| c.0 == month) {
                Some(c) => {
                    c.1 += lot.available;
                    c.2 += lot.pending;
                }
                None => member_cells.push((month, lot.available, lot.pending)),
            }
        }
        for (month, available, pending) in member_cells {
            let cell = self.cells.entry((month, tier.to_string())).or_default();
            cell.0 += available;
            cell.1 += pending;
            cell.2 += 1;
            self.totals.available += available;
            self.totals.pending += pending;
        }
        if held {
            self.totals.members_with_points += 1;
        }
        // Available balance beyond what the lots hold is debt (entries without a lot).
        let balance: i64 = ledger
            .entries()
            .iter()
            .filter(|e| e.wallet == Wallet::Points && e.state == State::Available)
            .map(|e| e.amount)
            .sum();
        let debt = (balance - in_lots).min(0);
        if debt < 0 {
            self.totals.debt += debt;
            self.totals.members_in_debt += 1;
        }
        for e in ledger.entries().iter().filter(|e| e.wallet == Wallet::Points) {
            if e.at < p.from || e.at >= p.to || e.state == State::Voided {
                continue;
            }
            let row = self.flows.entry(month_of(e.at, p.tz)).or_default();
            match e.kind {
                Kind::Earn if opens_lot(e) => row.issued += e.amount,
                Kind::Earn => {} // maturing: pending → available
                Kind::Redeem => row.redeemed -= e.amount,
                Kind::Expire => row.expired -= e.amount,
                Kind::Reverse => row.reversed -= e.amount,
                Kind::Adjust => row.adjusted += e.amount,
                // A merge moves points between two members; the shop owes the same.
                Kind::Transfer => {}
            }
        }
    }

    pub fn finish(self) -> Liability {
        let rate = self.params.cost_per_100_points_fen;
        let mut totals = self.totals;
        let flows: Vec<FlowRow> = self
            .flows
            .into_iter()
            .map(|(month, mut row)| {
                row.month = month;
                row
            })
            .collect();
        for f in &flows {
            totals.issued += f.issued;
            totals.redeemed += f.redeemed;
            totals.expired += f.expired;
            totals.reversed += f.reversed;
            totals.adjusted += f.adjusted;
        }
        totals.outstanding = totals.available + totals.pending + totals.debt;
        totals.cost_fen = cost_fen(totals.outstanding, rate);
        let outstanding = self
            .cells
            .into_iter()
            .map(|((expiry_month, tier), (available, pending, members))| OutstandingRow {
                expiry_month,
                tier,
                available,
                pending,
                members,
                cost_fen: cost_fen(available + pending, rate),
            })
            .collect();
        Liability {
            as_of: self.params.as_of,
            from: self.params.from,
            to: self.params.to,
            time_zone: self.params.tz.name().to_string(),
            cost_per_100_points_fen: rate,
            members: self.members,
            totals,
            outstanding,
            flows,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::loyalty::ledger::{Config, RefundedLine, Source};

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 4, 0, 0).unwrap()
    }

    fn params() -> Params {
        Params {
            as_of: t(2026, 12, 31),
            from: t(2026, 1, 1) - Duration::hours(4),
            to: t(2027, 1, 1),
            tz: chrono_tz::Asia::Shanghai,
            cost_per_100_points_fen: 100,
        }
    }

    /// One member earning on an order (pending, then matured), a behaviour award, a redemption, an expiry and
    /// a refund clawback; every figure worked out by hand.
    #[test]
    fn figures_add_up_by_hand() {
        let cfg = Config::default(); // 12-month rolling expiry, 7-day return window
        let mut l = Ledger::new(cfg.clone());
        // January: 300 for a behaviour rule (available), expires 2027-01.
        l.earn("a", Wallet::Points, 300, Source::Rule { rule_id: "review".into(), version: 1 }, t(2026, 1, 10))
            .unwrap();
        // March: 1000 on an order line, pending until the 17th.
        l.earn("o", Wallet::Points, 1000, Source::OrderLine { order_id: 1, line_no: 1 }, t(2026, 3, 10)).unwrap();
        l.mature(t(2026, 3, 20)).unwrap();
        // April: redeem 500 (takes the January lot's 300 first, then 200 of March's).
        l.redeem("r", 500, Source::Reward { reward_id: "mug".into() }, t(2026, 4, 1)).unwrap();
        // May: the order is fully refunded: 1000 reversed, 800 still in its lot, 200 becomes debt.
        l.reverse_order_lines(
            "refund:1",
            1,
            &[RefundedLine { line_no: 1, refunded_quantity: 1, line_quantity: 1 }],
            t(2026, 5, 1),
        )
        .unwrap();
        // June: 50 from an operator, never reaching expiry before the report.
        l.adjust("adj", Wallet::Points, 50, "op", "goodwill", t(2026, 6, 1)).unwrap();

        let mut b = LiabilityBuilder::new(params());
        b.add(&l, "silver");
        let r = b.finish();
        assert_eq!(r.members, 1);
        // What is left: the 50-point adjustment lot (expires 2027-06) and 200 of debt.
        assert_eq!(r.totals.available, 50);
        assert_eq!(r.totals.pending, 0);
        assert_eq!(r.totals.debt, -200);
        assert_eq!(r.totals.outstanding, -150);
        assert_eq!(r.totals.cost_fen, -150);
        assert_eq!(r.totals.issued, 1300);
        assert_eq!(r.totals.redeemed, 500);
        assert_eq!(r.totals.reversed, 1000);
        assert_eq!(r.totals.adjusted, 50);
        assert_eq!(r.totals.members_in_debt, 1);
        assert_eq!(r.outstanding.len(), 1);
        assert_eq!(r.outstanding[0].expiry_month, "2027-06");
        assert_eq!(r.outstanding[0].tier, "silver");
        let months: Vec<&str> = r.flows.iter().map(|f| f.month.as_str()).collect();
        assert_eq!(months, ["2026-01", "2026-03", "2026-04", "2026-05", "2026-06"]);
        // Maturing in March moved points between buckets: only the lot's opening counts as issued.
        assert_eq!(r.flows[1].issued, 1000);
    }

    #[test]
    fn expiry_and_pending_are_grouped_by_month_and_tier() {
        let cfg = Config::default();
        let mut a = Ledger::new(cfg.clone());
        a.earn("x", Wallet::Points, 100, Source::Rule { rule_id: "r".into(), version: 1 }, t(2025, 11, 5)).unwrap();
        a.earn("o", Wallet::Points, 40, Source::OrderLine { order_id: 7, line_no: 1 }, t(2026, 12, 28)).unwrap();
        a.expire_due(t(2026, 11, 6)).unwrap(); // the 2025-11 lot expires in 2026-11
        let mut b = Ledger::new(cfg);
        b.earn("y", Wallet::Points, 70, Source::Rule { rule_id: "r".into(), version: 1 }, t(2026, 12, 1)).unwrap();
        b.earn("g", Wallet::Growth, 999, Source::Rule { rule_id: "r".into(), version: 1 }, t(2026, 12, 1)).unwrap();
        let mut builder = LiabilityBuilder::new(params());
        builder.add(&a, "gold");
        builder.add(&b, "gold");
        let r = builder.finish();
        let cells: Vec<(&str, &str, i64, i64, u64)> = r
            .outstanding
            .iter()
            .map(|c| (c.expiry_month.as_str(), c.tier.as_str(), c.available, c.pending, c.members))
            .collect();
        assert_eq!(cells, [("2027-12", "gold", 70, 40, 2)]);
        assert_eq!(r.totals.expired, 100);
        assert_eq!(r.totals.members_with_points, 2);
        // Growth value is not a liability.
        assert_eq!(r.totals.available + r.totals.pending, 110);
    }

    #[test]
    fn cost_rounds_down_and_handles_debt() {
        assert_eq!(cost_fen(199, 1), 1);
        assert_eq!(cost_fen(-1, 100), -1);
        assert_eq!(cost_fen(-150, 1), -2);
        assert_eq!(cost_fen(i64::MAX, 100), i64::MAX);
    }
}
