//! Backtest (回测): replay the shop's real history under a draft programme (earning rules and tiers) and
//! under the programme in force, writing nothing, and compare what each would have cost. Pure: members'
//! histories in, a report out.
//!
//! # How a member is replayed
//!
//! * Everything the member did, from registration up to `until`, is replayed in time order into a fresh
//!   in-memory [`Ledger`] with the programme's ledger policies: registration (and profile completion) at
//!   registration time, each order with the same earning function the engine uses ([`earning::earn_order`]),
//!   each refund reversing exactly what its lines earned, each earning event (check-in with its streak,
//!   share, review). Before each step pending points that are due mature and due lots expire, as the
//!   scheduler would have done.
//! * The tier before each order is the one the programme's tier rules give for the growth replayed so far
//!   (tier multipliers therefore follow the draft's own tiers).
//! * **Referrals** pay the referrer's share of the programme's referral rule when a member they referred
//!   places a first paid order, as the engine does (the referee's own share is part of that order).
//! * **Redemptions** are the member's real ones: each is replayed as the same points debit at the same time
//!   if the replayed balance covers it, and counted as *unaffordable* otherwise (the draft would have left
//!   that member short).
//! * Both programmes are replayed from the same history, so the comparison is like for like: "current" is
//!   the rules in force now applied to the whole history, not the ledger as it was written over time by
//!   earlier rule versions.
//!
//! # What is reported per programme
//!
//! The liability report of the replayed ledgers ([`Liability`]: points issued, redeemed, expired, reversed
//! per month within `[from, to)`, and outstanding points at `until` by expiry month and tier, with their cost
//! at the redemption rate), the cost of the points issued, members per tier at `until`, and the tier
//! migration matrix: for each tier under the current programme, where its members would be under the draft.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use thiserror::Error;

use super::earning::{self, BehaviourInput, MemberFacts};
use super::ledger::{Config as LedgerConfig, Ledger, LedgerError, RefundedLine, Source, Wallet};
use super::liability::{self, Liability, LiabilityBuilder, Params};
use super::rules::{Behaviour, BehaviourEvent, RuleOrder, RuleSet};
use super::tiers::{TierError, TierProgram, TierState};
use crate::members::MemberId;

/// One thing that happened to a member, as the replay needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    Order {
        order_id: i64,
        order: RuleOrder,
        /// The member's first paid order (for the referral rule).
        first_paid: bool,
    },
    Refund {
        refund_id: i64,
        order_id: i64,
        lines: Vec<RefundedLine>,
        at: DateTime<Utc>,
    },
    Behaviour(BehaviourInput),
    /// A real redemption, replayed as the same debit when the replayed balance covers it.
    Spend {
        key: String,
        points: i64,
        at: DateTime<Utc>,
    },
    /// A member this one referred paid their first order: the referrer's share under the programme's rules.
    Referral {
        referee: MemberId,
        order_id: i64,
        at: DateTime<Utc>,
    },
    /// An operator's adjustment, replayed as it was made (it does not depend on the rules).
    Adjust {
        key: String,
        wallet: Wallet,
        amount: i64,
        at: DateTime<Utc>,
    },
}

impl Cause {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Cause::Order { order, .. } => order.placed_at,
            Cause::Refund { at, .. }
            | Cause::Spend { at, .. }
            | Cause::Adjust { at, .. }
            | Cause::Referral { at, .. } => *at,
            Cause::Behaviour(b) => b.event.at,
        }
    }
}

/// A member's history to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberHistory {
    pub member: MemberId,
    pub registered_at: DateTime<Utc>,
    pub birthday: Option<NaiveDate>,
    pub profile_complete: bool,
    pub referred_by: Option<MemberId>,
    /// Paid card terms the member bought: their multipliers count where a rule reads the benefits.
    pub cards: Vec<crate::loyalty::tiers::CardTerm>,
    /// Any order; replayed by time (ties keep this order).
    pub causes: Vec<Cause>,
}

/// A loyalty programme as the backtest compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Programme {
    pub rules: RuleSet,
    pub tiers: TierProgram,
    pub ledger: LedgerConfig,
}

/// Why a member's history could not be replayed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BacktestError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("tiers: {0}")]
    Tier(#[from] TierError),
}

/// One member replayed under one programme.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub ledger: Ledger,
    pub tier: TierState,
    /// Real redemptions the replayed balance could not cover.
    pub unaffordable: u64,
}

/// Replay a member's history under a programme up to `until`.
pub fn replay(p: &Programme, h: &MemberHistory, until: DateTime<Utc>) -> Result<Replayed, BacktestError> {
    let mut ledger = Ledger::new(p.ledger.clone());
    let mut causes: Vec<&Cause> = h.causes.iter().filter(|c| c.at() <= until).collect();
    causes.sort_by_key(|c| c.at());
    let joined = |behaviour| {
        Cause::Behaviour(BehaviourInput {
            subject: match behaviour {
                Behaviour::Registration => "registration".into(),
                _ => "profile".into(),
            },
            event: BehaviourEvent { at: h.registered_at, behaviour },
        })
    };
    let mut first = vec![joined(Behaviour::Registration)];
    if h.profile_complete {
        first.push(joined(Behaviour::ProfileCompletion));
    }
    let mut state: Option<TierState> = None;
    let mut unaffordable = 0;
    for cause in first.iter().filter(|_| h.registered_at <= until).chain(causes) {
        let at = cause.at();
        ledger.mature(at)?;
        ledger.expire_due(at)?;
        if matches!(cause, Cause::Order { .. }) || state.is_none() {
            // The tier only matters to order multipliers; bringing it up to date is not free.
            state = Some(earning::update_tier(&p.tiers, state.take(), &ledger, h.registered_at, at)?.0);
        }
        let tier = state.as_ref().map(|s| s.tier.clone()).unwrap_or_default();
        let facts = |first_paid_order| MemberFacts {
            benefits: earning::benefits_at(Some(&p.tiers), &tier, &h.cards, at),
            tier: tier.clone(),
            birthday: h.birthday,
            registered_at: h.registered_at,
            referred_by: h.referred_by,
            first_paid_order,
        };
        match cause {
            Cause::Order { order_id, order, first_paid } => {
                earning::earn_order(&mut ledger, *order_id, order, &facts(*first_paid), &p.rules)?;
            }
            Cause::Refund { refund_id, order_id, lines, at } => {
                earning::reverse_refund(&mut ledger, *refund_id, *order_id, lines, *at)?;
            }
            Cause::Behaviour(input) => {
                earning::earn_behaviour(&mut ledger, input, &facts(false), &p.rules)?;
            }
            Cause::Spend { key, points, at } => {
                let available = ledger.balances(*at, chrono::Duration::zero()).available;
                if available >= *points {
                    ledger.redeem(key, *points, Source::Reward { reward_id: "backtest".into() }, *at)?;
                } else {
                    unaffordable += 1;
                }
            }
            Cause::Referral { referee, order_id, at } => {
                earning::earn_referrer(&mut ledger, *referee, *order_id, *at, &p.rules)?;
            }
            Cause::Adjust { key, wallet, amount, at } => {
                ledger.adjust(key, *wallet, *amount, "backtest", "replayed adjustment", *at)?;
            }
        }
    }
    ledger.mature(until)?;
    ledger.expire_due(until)?;
    let (tier, _) = earning::update_tier(&p.tiers, state, &ledger, h.registered_at, until)?;
    Ok(Replayed { ledger, tier, unaffordable })
}

/// What one programme would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgrammeOutcome {
    pub rule_version: u32,
    pub tier_program_version: u32,
    pub liability: Liability,
    /// Points issued within the period at the redemption rate, in fen.
    pub issued_cost_fen: i64,
    /// Members per tier at the end, by tier code.
    pub tiers: BTreeMap<String, u64>,
    pub unaffordable_redemptions: u64,
}

/// Members who are in tier `from` under the current programme and would be in `to` under the draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    pub from: String,
    pub to: String,
    pub members: u64,
}

/// The backtest's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backtest {
    pub members: u64,
    /// Members whose history could not be replayed under one of the programmes, with the reason.
    pub failed: Vec<(MemberId, String)>,
    pub current: ProgrammeOutcome,
    pub draft: ProgrammeOutcome,
    /// Tier codes of the current programme, lowest first (the matrix's rows).
    pub current_tiers: Vec<String>,
    /// Tier codes of the draft, lowest first (the matrix's columns).
    pub draft_tiers: Vec<String>,
    /// Non-empty cells of the migration matrix, in row then column order.
    pub migration: Vec<Migration>,
}

struct Side {
    liability: LiabilityBuilder,
    tiers: BTreeMap<String, u64>,
    unaffordable: u64,
}

/// Accumulates the backtest member by member.
pub struct BacktestBuilder {
    current: Programme,
    draft: Programme,
    until: DateTime<Utc>,
    sides: [Side; 2],
    members: u64,
    failed: Vec<(MemberId, String)>,
    matrix: BTreeMap<(usize, usize), u64>,
}

impl BacktestBuilder {
    /// `params` are the liability report's (period, time zone, redemption rate); `as_of` is the replay's end.
    pub fn new(current: Programme, draft: Programme, params: Params) -> Self {
        let side =
            || Side { liability: LiabilityBuilder::new(params.clone()), tiers: BTreeMap::new(), unaffordable: 0 };
        Self {
            current,
            draft,
            until: params.as_of,
            sides: [side(), side()],
            members: 0,
            failed: Vec::new(),
            matrix: BTreeMap::new(),
        }
    }

    /// Replay one member under both programmes.
    pub fn add(&mut self, h: &MemberHistory) {
        if h.registered_at > self.until {
            return;
        }
        let (cur, dra) = match (replay(&self.current, h, self.until), replay(&self.draft, h, self.until)) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) => {
                self.failed.push((h.member, e.to_string()));
                return;
            }
        };
        self.members += 1;
        for (side, r) in self.sides.iter_mut().zip([&cur, &dra]) {
            side.liability.add(&r.ledger, &r.tier.tier);
            *side.tiers.entry(r.tier.tier.clone()).or_default() += 1;
            side.unaffordable += r.unaffordable;
        }
        let rank = |p: &TierProgram, code: &str| p.tiers.iter().position(|t| t.code == code).unwrap_or(usize::MAX);
        let cell = (rank(&self.current.tiers, &cur.tier.tier), rank(&self.draft.tiers, &dra.tier.tier));
        *self.matrix.entry(cell).or_default() += 1;
    }

    pub fn finish(self) -> Backtest {
        let codes = |p: &TierProgram| p.tiers.iter().map(|t| t.code.clone()).collect::<Vec<_>>();
        let (current_tiers, draft_tiers) = (codes(&self.current.tiers), codes(&self.draft.tiers));
        let name = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_else(|| "?".into());
        let migration = self
            .matrix
            .iter()
            .map(|(&(f, t), &members)| Migration { from: name(&current_tiers, f), to: name(&draft_tiers, t), members })
            .collect();
        let [cur, dra] = self.sides;
        let outcome = |side: Side, p: &Programme| {
            let liability = side.liability.finish();
            ProgrammeOutcome {
                rule_version: p.rules.version,
                tier_program_version: p.tiers.version,
                issued_cost_fen: liability::cost_fen(liability.totals.issued, liability.cost_per_100_points_fen),
                liability,
                tiers: side.tiers,
                unaffordable_redemptions: side.unaffordable,
            }
        };
        Backtest {
            members: self.members,
            failed: self.failed,
            current: outcome(cur, &self.current),
            draft: outcome(dra, &self.draft),
            current_tiers,
            draft_tiers,
            migration,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::commerce::order::LineKind;
    use crate::loyalty::rules::RuleLine;

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 4, 0, 0).unwrap()
    }

    fn programme(rules_toml: &str) -> Programme {
        Programme {
            rules: RuleSet::from_toml(rules_toml).unwrap(),
            tiers: TierProgram::from_toml(crate::loyalty::tiers::EXAMPLE_TOML).unwrap(),
            ledger: LedgerConfig::default(),
        }
    }

    fn order(id: i64, at: DateTime<Utc>, fen: i64) -> Cause {
        Cause::Order {
            order_id: id,
            order: RuleOrder {
                channel: "tmall".into(),
                placed_at: at,
                paid: true,
                lines: vec![RuleLine {
                    line_no: 1,
                    sku: "TEA-1".into(),
                    category_path: None,
                    brand: None,
                    kind: LineKind::Product,
                    amount: fen,
                }],
                shipping_fee: 0,
            },
            first_paid: id == 1,
        }
    }

    /// A buyer with four orders in 2026 (all on Tuesdays, so no member-day bonus, and each under the daily
    /// cap), one refunded, and a redemption.
    fn history() -> MemberHistory {
        MemberHistory {
            member: 7,
            registered_at: t(2026, 1, 5),
            birthday: None,
            profile_complete: false,
            referred_by: None,
            cards: Vec::new(),
            causes: vec![
                order(1, t(2026, 1, 6), 150_000),
                order(2, t(2026, 1, 13), 100_000),
                order(3, t(2026, 3, 3), 100_000),
                Cause::Refund {
                    refund_id: 9,
                    order_id: 3,
                    lines: vec![RefundedLine { line_no: 1, refunded_quantity: 1, line_quantity: 1 }],
                    at: t(2026, 3, 5),
                },
                Cause::Spend { key: "redeem:a".into(), points: 2000, at: t(2026, 4, 1) },
                order(4, t(2026, 5, 5), 100_000),
            ],
        }
    }

    fn params() -> Params {
        Params {
            as_of: t(2026, 12, 31),
            from: t(2026, 1, 1),
            to: t(2026, 12, 31),
            tz: chrono_tz::Asia::Shanghai,
            cost_per_100_points_fen: 100,
        }
    }

    #[test]
    fn the_same_programme_twice_is_the_identity_migration() {
        let p = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let mut b = BacktestBuilder::new(p.clone(), p, params());
        b.add(&history());
        let r = b.finish();
        assert_eq!(r.members, 1);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.current, r.draft);
        assert!(r.migration.iter().all(|m| m.from == m.to), "{:?}", r.migration);
    }

    #[test]
    fn replay_follows_the_engine_by_hand() {
        let p = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let r = replay(&p, &history(), t(2026, 12, 31)).unwrap();
        let b = r.ledger.balances(t(2026, 12, 31), Duration::zero());
        // Registration 100 (the example rule set); orders 1 and 2 at ×1.0 (regular): 1500 + 1000. Their growth
        // (2500 ≥ 2000) makes the member silver once the return windows close; order 3 (silver ×1.2) is
        // refunded in full while pending; the redemption takes 2000; order 4 (silver ×1.2) earns 1200.
        assert_eq!(b.available, 100 + 1500 + 1000 - 2000 + 1200);
        assert_eq!(b.pending, 0);
        assert_eq!(r.unaffordable, 0);
        assert_eq!(r.tier.tier, "silver", "growth 3500 is short of gold's 5000");
    }

    #[test]
    fn a_richer_draft_issues_more_and_moves_members_up() {
        let current = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let mut draft = current.clone();
        // Halve every tier threshold: the member reaches gold (2500) in January.
        for tier in &mut draft.tiers.tiers {
            tier.threshold /= 2;
            tier.keep /= 2;
        }
        draft.tiers.version += 1;
        let mut b = BacktestBuilder::new(current, draft, params());
        b.add(&history());
        let r = b.finish();
        assert!(r.draft.liability.totals.issued > r.current.liability.totals.issued, "{r:?}");
        assert_eq!(r.migration.len(), 1);
        assert_eq!((r.migration[0].from.as_str(), r.migration[0].to.as_str()), ("silver", "gold"));
        assert_eq!(r.current.issued_cost_fen, r.current.liability.totals.issued);
    }

    #[test]
    fn a_stingier_draft_leaves_redemptions_unaffordable() {
        let current = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let stingy = crate::loyalty::rules::EXAMPLE_TOML.replacen("points_per_unit = 1\n", "points_per_unit = 0\n", 1);
        let draft = programme(&stingy);
        let mut b = BacktestBuilder::new(current, draft, params());
        b.add(&history());
        let r = b.finish();
        assert_eq!(r.current.unaffordable_redemptions, 0);
        assert_eq!(r.draft.unaffordable_redemptions, 1, "100 registration points do not cover 2000");
        assert_eq!(r.draft.liability.totals.redeemed, 0);
    }

    #[test]
    fn a_referrer_is_paid_the_programmes_share_per_referee() {
        let current = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let stingy = crate::loyalty::rules::EXAMPLE_TOML.replacen("referrer_points = 500", "referrer_points = 200", 1);
        assert_ne!(stingy, crate::loyalty::rules::EXAMPLE_TOML);
        let draft = programme(&stingy);
        let mut h = history();
        h.causes = vec![
            Cause::Referral { referee: 8, order_id: 80, at: t(2026, 2, 3) },
            Cause::Referral { referee: 9, order_id: 90, at: t(2026, 2, 4) },
        ];
        let at = t(2026, 12, 31);
        let available = |p: &Programme| replay(p, &h, at).unwrap().ledger.balances(at, Duration::zero()).available;
        assert_eq!(available(&current), 100 + 2 * 500, "registration, then two referees at once");
        assert_eq!(available(&draft), 100 + 2 * 200);
        let mut b = BacktestBuilder::new(current, draft, params());
        b.add(&h);
        let r = b.finish();
        assert_eq!(r.current.liability.totals.issued - r.draft.liability.totals.issued, 2 * 300, "{r:?}");
    }

    #[test]
    fn nothing_after_until_is_replayed() {
        let p = programme(crate::loyalty::rules::EXAMPLE_TOML);
        let early = replay(&p, &history(), t(2026, 2, 1)).unwrap();
        assert_eq!(early.ledger.balances(t(2026, 2, 1), Duration::zero()).available, 100 + 1500 + 1000);
    }
}
