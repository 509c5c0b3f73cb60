//! Earning, end to end and still pure: an order, a refund or a behaviour goes in with the member's ledger,
//! the member's facts and the rule set; ledger entries and the rule evaluation that explains them come out.
//! The store runs these inside the member's transaction; the simulator and the backtest run them on copies.
//!
//! # Operation keys
//!
//! Every write has a key derived from what caused it, so the same cause never earns twice, whoever retries:
//!
//! | cause | operation keys |
//! | --- | --- |
//! | order `N`, line `L` | `order:N:L:points`, `order:N:L:growth` (the evaluation is kept under `order:N`) |
//! | refund `R` of order `N` | `refund:R` |
//! | check-in on local day `D` | `checkin:D` |
//! | share or review event with key `K` | `share:K`, `review:K` |
//! | registration, profile completion | `registration`, `profile` (once per member) |
//!
//! A behaviour award is split into a points and a growth operation (`…:points`, `…:growth`) like order lines.
//!
//! # Caps
//!
//! What the member already earned today and this month (local to the rule set's time zone) is read off the
//! ledger itself: points credited by order lines count against the base rule, points credited by a rule
//! against that rule. So caps hold across restarts and processes without a separate counter.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ledger::{Entry, Kind, Ledger, LedgerError, RefundedLine, Source, Wallet};
use super::rules::{
    Behaviour, BehaviourEvent, Beneficiary, BenefitMultiplier, Effect, Evaluation, Explanation, MemberSnapshot, Rule,
    RuleInput, RuleOrder, RuleSet, Target, Usage, evaluate,
};
use super::tiers::{Growth, TierChange, TierError, TierProgram, TierState};
use crate::members::MemberId;

/// What the rules need to know about a member beyond their ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFacts {
    /// Tier code at the time of the input (empty when the program has no tiers).
    pub tier: String,
    pub birthday: Option<NaiveDate>,
    pub registered_at: DateTime<Utc>,
    pub referred_by: Option<MemberId>,
    /// No paid order of this member precedes the one being evaluated.
    pub first_paid_order: bool,
    /// The tier's and active paid cards' points multiplier at the time of the input (see
    /// [`benefits_at`]); none without a tier program.
    pub benefits: Option<BenefitMultiplier>,
}

/// The benefits multiplier of a member in `tier` holding `cards`, at `at`: the best of the tier's and the
/// active cards' (what a `multiplier = "benefits"` rule reads). None without a program; an unknown tier
/// code (the program changed) counts as the lowest tier.
pub fn benefits_at(
    program: Option<&crate::loyalty::tiers::TierProgram>,
    tier: &str,
    cards: &[crate::loyalty::tiers::CardTerm],
    at: DateTime<Utc>,
) -> Option<BenefitMultiplier> {
    let program = program?;
    let t = program.tier(tier).or(program.tiers.first())?;
    let e = crate::loyalty::tiers::effective_benefits(t, cards, at);
    Some(BenefitMultiplier { multiplier_bp: e.points_multiplier_bp, sources: e.sources })
}

/// The result of one earning step: what was written and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Earned {
    /// The operation key the evaluation is kept under (`order:N`, `checkin:D`, …).
    pub subject: String,
    pub evaluation: Evaluation,
    /// New ledger entries (none on a replay).
    pub entries: Vec<Entry>,
}

/// The base rule's id, against which order-line points count for caps.
fn base_rule_id(rules: &RuleSet) -> Option<&str> {
    rules.rules.iter().find_map(|r| if let Rule::Base(b) = r { Some(b.id.as_str()) } else { None })
}

/// Points already credited by each rule on the local day and month of `at`, read off the ledger.
pub fn usage(entries: &[Entry], rules: &RuleSet, at: DateTime<Utc>) -> (Usage, Usage) {
    let tz = rules.time_zone;
    let local = at.with_timezone(&tz).date_naive();
    let base = base_rule_id(rules);
    let (mut today, mut month) = (Usage::default(), Usage::default());
    for e in entries {
        // Only the entry that opens an earn lot counts: maturing moves points, it does not earn them again.
        if e.kind != Kind::Earn
            || e.wallet != Wallet::Points
            || e.amount <= 0
            || e.lot.as_ref().is_none_or(|l| l.0 != e.key)
        {
            continue;
        }
        let rule = match &e.source {
            Source::OrderLine { .. } => match base {
                Some(b) => b.to_string(),
                None => continue,
            },
            Source::Rule { rule_id, .. } => rule_id.clone(),
            _ => continue,
        };
        let d = e.at.with_timezone(&tz).date_naive();
        if d.year() != local.year() || d.month() != local.month() {
            continue;
        }
        let bump = |u: &mut Usage| {
            let slot = u.by_rule.entry(rule.clone()).or_default();
            slot.points = slot.points.saturating_add(e.amount);
            slot.count = slot.count.saturating_add(1);
        };
        bump(&mut month);
        if d == local {
            bump(&mut today);
        }
    }
    (today, month)
}

/// Rules already awarded once to this member (registration, profile completion, referral).
fn once_awarded(entries: &[Entry], rules: &RuleSet) -> BTreeSet<String> {
    let once: BTreeSet<&str> = rules
        .rules
        .iter()
        .filter(|r| matches!(r, Rule::Registration(_) | Rule::ProfileCompletion(_) | Rule::Referral(_)))
        .map(Rule::id)
        .collect();
    entries
        .iter()
        .filter_map(|e| match &e.source {
            Source::Rule { rule_id, .. } if once.contains(rule_id.as_str()) => Some(rule_id.clone()),
            _ => None,
        })
        .collect()
}

/// The snapshot the evaluator sees: facts plus what the ledger says about caps and once-only awards.
pub fn snapshot(ledger: &Ledger, facts: &MemberFacts, rules: &RuleSet, at: DateTime<Utc>) -> MemberSnapshot {
    let (today, this_month) = usage(ledger.entries(), rules, at);
    MemberSnapshot {
        tier: facts.tier.clone(),
        birthday: facts.birthday,
        registered_at: facts.registered_at,
        today,
        this_month,
        first_paid_order: facts.first_paid_order,
        referred_by: facts.referred_by,
        once_awarded: once_awarded(ledger.entries(), rules),
        benefits: facts.benefits.clone(),
    }
}

/// Earn on an order: evaluate it and credit each line's points and growth value (pending for the return
/// window). Unpaid orders are evaluated (so the simulator can explain them) but earn nothing. The referrer's
/// share of a referral is in the evaluation's effects for the caller to credit to the referrer.
pub fn earn_order(
    ledger: &mut Ledger,
    order_id: i64,
    order: &RuleOrder,
    facts: &MemberFacts,
    rules: &RuleSet,
) -> Result<Earned, LedgerError> {
    let subject = format!("order:{order_id}");
    let at = order.placed_at;
    let evaluation = evaluate(&RuleInput::Order(order.clone()), &snapshot(ledger, facts, rules, at), rules);
    let mut entries = Vec::new();
    if order.paid {
        for effect in evaluation.effects.iter().filter(|e| e.beneficiary == Beneficiary::Member) {
            let (key, source) = match effect.target {
                Target::Line { line_no } => (format!("{subject}:{line_no}"), Source::OrderLine { order_id, line_no }),
                // Shipping earns as line 0, so a shipping refund could reverse it like a line.
                Target::Shipping => (format!("{subject}:0"), Source::OrderLine { order_id, line_no: 0 }),
                Target::Order | Target::Event => (
                    format!("{subject}:{}", effect.rule_id),
                    Source::Rule { rule_id: effect.rule_id.clone(), version: i64::from(effect.rule_version) },
                ),
            };
            entries.extend(credit(ledger, &key, effect.points, effect.growth, source, at)?);
        }
    }
    Ok(Earned { subject, evaluation, entries })
}

/// The part of an evaluation worth keeping beside the ledger: the explanations of the rules that could
/// concern this kind of input (order rules for an order, the behaviour's own rule for an event) and of
/// the caps. "Registration rules do not apply to orders" is true of every order and not worth storing.
pub fn for_record(evaluation: &Evaluation, input_is_order: bool, rules: &RuleSet) -> Evaluation {
    let relevant: BTreeSet<&str> = rules
        .rules
        .iter()
        .filter(|r| {
            let order_rule = matches!(r, Rule::Base(_) | Rule::Multiplier(_) | Rule::Referral(_));
            if input_is_order {
                order_rule
            } else {
                !order_rule && evaluation.effects.iter().any(|e| e.rule_id == r.id())
            }
        })
        .map(Rule::id)
        .chain(rules.caps.iter().map(|c| c.id.as_str()))
        .collect();
    Evaluation {
        rule_version: evaluation.rule_version,
        effects: evaluation.effects.clone(),
        explanations: evaluation
            .explanations
            .iter()
            .filter(|x| relevant.contains(x.rule_id.as_str()))
            .cloned()
            .collect(),
    }
}

/// Credit points and growth value under `{key}:points` / `{key}:growth`; zero amounts write nothing.
fn credit(
    ledger: &mut Ledger,
    key: &str,
    points: i64,
    growth: i64,
    source: Source,
    at: DateTime<Utc>,
) -> Result<Vec<Entry>, LedgerError> {
    let mut out = Vec::new();
    for (wallet, amount, suffix) in [(Wallet::Points, points, "points"), (Wallet::Growth, growth, "growth")] {
        if amount > 0 {
            let o = ledger.earn(&format!("{key}:{suffix}"), wallet, amount, source.clone(), at)?;
            if !o.replayed {
                out.extend(o.entries);
            }
        }
    }
    Ok(out)
}

/// Event types that may earn: `share`, `check_in` and `custom.review` (reviews arrive as a custom event).
pub fn earns(event_type: &str) -> bool {
    behaviour_of(event_type, 1).is_some()
}

/// The behaviour an event type stands for; `streak_day` is used for check-ins.
pub fn behaviour_of(event_type: &str, streak_day: u32) -> Option<Behaviour> {
    match event_type {
        "share" => Some(Behaviour::Share),
        "check_in" => Some(Behaviour::CheckIn { streak_day }),
        "custom.review" => Some(Behaviour::Review),
        _ => None,
    }
}

/// Growth value as tiers count it: every available growth movement, at the time it became available
/// (a matured lot counts from the end of its return window, whenever the maturing job ran).
pub fn growth_history(ledger: &Ledger) -> Vec<Growth> {
    let available_at: std::collections::HashMap<&str, DateTime<Utc>> =
        ledger.lots().iter().filter_map(|l| l.available_at.map(|t| (l.id.0.as_str(), t))).collect();
    ledger
        .entries()
        .iter()
        .filter(|e| e.wallet == Wallet::Growth && e.state == super::ledger::State::Available)
        .map(|e| {
            let matured = e.kind == Kind::Earn && e.lot.as_ref().is_some_and(|l| l.0 != e.key);
            let at = match e.lot.as_ref() {
                Some(l) if matured => available_at.get(l.0.as_str()).copied().unwrap_or(e.at),
                _ => e.at,
            };
            Growth { at, amount: e.amount }
        })
        .collect()
}

/// Bring a member's tier up to date as of `now`: enrol at `enrol_at` if the member has no tier yet, then
/// apply every upgrade, grace and downgrade due. Returns the state and the new changes.
pub fn update_tier(
    program: &TierProgram,
    state: Option<TierState>,
    ledger: &Ledger,
    enrol_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(TierState, Vec<TierChange>), TierError> {
    let history = growth_history(ledger);
    let (mut state, mut changes) = match state {
        Some(s) => (s, Vec::new()),
        None => program.enroll(&history, enrol_at.min(now))?,
    };
    if now > state.as_of {
        changes.extend(program.advance(&mut state, &history, now)?);
    }
    Ok((state, changes))
}

/// A behaviour that may earn, with the key that makes it count once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviourInput {
    /// `checkin:2026-11-23`, `share:<event key>`, `registration`, …
    pub subject: String,
    pub event: BehaviourEvent,
}

impl BehaviourInput {
    /// A check-in on the local day of `at`, with the streak it makes.
    pub fn check_in(at: DateTime<Utc>, local_day: NaiveDate, streak_day: u32) -> Self {
        Self {
            subject: format!("checkin:{local_day}"),
            event: BehaviourEvent { at, behaviour: Behaviour::CheckIn { streak_day } },
        }
    }
}

/// The referrer's share of a referral, credited to the referrer's ledger once per referee (key
/// `referral:{referee}`), available at once. The caller has checked that the order is the referee's first
/// paid order and that the referee names this member; the rule set in force gives the amount.
pub fn earn_referrer(
    ledger: &mut Ledger,
    referee: MemberId,
    order_id: i64,
    at: DateTime<Utc>,
    rules: &RuleSet,
) -> Result<Earned, LedgerError> {
    let subject = format!("referral:{referee}");
    let mut evaluation = Evaluation { rule_version: rules.version, effects: Vec::new(), explanations: Vec::new() };
    let mut entries = Vec::new();
    let rule = rules.rules.iter().find_map(|r| match r {
        Rule::Referral(r) => Some(r),
        _ => None,
    });
    match rule {
        Some(r) if r.referrer_points > 0 => {
            evaluation.explanations.push(Explanation {
                rule_id: r.id.clone(),
                target: Target::Order,
                applied: true,
                reason: format!("member {referee}, whom this member referred, paid their first order ({order_id})"),
            });
            evaluation.effects.push(Effect {
                target: Target::Order,
                beneficiary: Beneficiary::Member,
                rule_id: r.id.clone(),
                rule_version: rules.version,
                points: r.referrer_points,
                growth: 0,
                uncapped_points: r.referrer_points,
                multiplier_bp: super::rules::BP,
                multipliers: Vec::new(),
            });
            let source = Source::Rule { rule_id: r.id.clone(), version: i64::from(rules.version) };
            entries = credit(ledger, &subject, r.referrer_points, 0, source, at)?;
        }
        Some(r) => evaluation.explanations.push(Explanation {
            rule_id: r.id.clone(),
            target: Target::Order,
            applied: false,
            reason: "the referral rule gives the referrer nothing".into(),
        }),
        None => {}
    }
    Ok(Earned { subject, evaluation, entries })
}

/// Earn on a behaviour (check-in, share, review, registration, profile completion).
pub fn earn_behaviour(
    ledger: &mut Ledger,
    input: &BehaviourInput,
    facts: &MemberFacts,
    rules: &RuleSet,
) -> Result<Earned, LedgerError> {
    let at = input.event.at;
    let evaluation = evaluate(&RuleInput::Event(input.event.clone()), &snapshot(ledger, facts, rules, at), rules);
    let mut entries = Vec::new();
    // The first occurrence of a behaviour wins: a second check-in the same day (another channel, another
    // time) finds its key taken and earns nothing, rather than conflicting.
    let subject = &input.subject;
    if ledger.has_op(&format!("{subject}:points")) || ledger.has_op(&format!("{subject}:growth")) {
        return Ok(Earned { subject: subject.clone(), evaluation, entries });
    }
    for effect in evaluation.effects.iter().filter(|e| e.beneficiary == Beneficiary::Member) {
        let source = Source::Rule { rule_id: effect.rule_id.clone(), version: i64::from(effect.rule_version) };
        entries.extend(credit(ledger, &input.subject, effect.points, effect.growth, source, at)?);
    }
    Ok(Earned { subject: input.subject.clone(), evaluation, entries })
}

/// Reverse what refunded lines earned (points and growth value, per line), under `refund:{refund_id}`.
/// `lines` carry the cumulative refunded quantities as of this refund, so a late retry reverses nothing more.
pub fn reverse_refund(
    ledger: &mut Ledger,
    refund_id: i64,
    order_id: i64,
    lines: &[RefundedLine],
    at: DateTime<Utc>,
) -> Result<Vec<Entry>, LedgerError> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let o = ledger.reverse_order_lines(&format!("refund:{refund_id}"), order_id, lines, at)?;
    Ok(if o.replayed { Vec::new() } else { o.entries })
}

/// The streak a check-in on `day` makes, given the local days of earlier check-ins (any order, duplicates
/// allowed): 1 plus the number of consecutive days right before `day`.
pub fn streak_on(day: NaiveDate, earlier: &[NaiveDate]) -> u32 {
    let days: BTreeSet<NaiveDate> = earlier.iter().copied().filter(|d| *d < day).collect();
    let mut streak = 1u32;
    let mut cursor = day;
    while let Some(prev) = cursor.pred_opt() {
        if !days.contains(&prev) {
            break;
        }
        streak = streak.saturating_add(1);
        cursor = prev;
    }
    streak
}

#[cfg(test)]
mod tests;
