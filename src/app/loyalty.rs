//! The earning engine at work: settles the loyalty queue (orders, refunds, behaviour events, member
//! changes) into ledger entries with the rules in force, keeps the rule-set versions, and answers "what
//! would this earn" without writing.
//!
//! Every order, refund, earning event or member change queues a task in its own transaction; settling
//! turns tasks into ledger entries and removes them in one transaction per batch. Writers settle right after
//! they commit (so a `201` means the points are on the ledger), and the server settles leftovers on a timer,
//! which is what recovers work interrupted by a crash. Operations are idempotent by key, so a task settled
//! twice writes once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::loyalty::earning::{self, BehaviourInput, Earned, MemberFacts};
use crate::loyalty::ledger::{Config as LedgerConfig, Ledger, LedgerError};
use crate::loyalty::risk::RiskPolicy;
use crate::loyalty::rules::{Behaviour, BehaviourEvent, RuleOrder, RuleSet, RuleSetError};
use crate::loyalty::tiers::{TierChange, TierProgram, TierState};
use crate::members::MemberId;
use crate::store::{
    Actor, Applied, EvaluationRecord, LedgerJob, LoyaltyOp, LoyaltyTask, MemberFactsRow, RuleSetRecord, Store,
    StoreError,
};

/// Tasks settled per batch (one transaction).
const SETTLE_BATCH: i64 = 2000;

/// How far back check-ins are read to find a streak.
const STREAK_LOOKBACK_DAYS: i64 = 400;

/// A behaviour event as the rules see it; check-ins carry the streak they make, from the member's
/// check-in times (`earlier`, any order; later ones are ignored).
pub(crate) fn behaviour(
    kind: &str,
    key: &str,
    at: DateTime<Utc>,
    earlier: &[DateTime<Utc>],
    rules: &RuleSet,
) -> Option<BehaviourInput> {
    let tz = rules.time_zone;
    if kind == "check_in" {
        let day = at.with_timezone(&tz).date_naive();
        let days: Vec<_> = earlier.iter().map(|t| t.with_timezone(&tz).date_naive()).collect();
        return Some(BehaviourInput::check_in(at, day, earning::streak_on(day, &days)));
    }
    earning::behaviour_of(kind, 1).map(|behaviour| BehaviourInput {
        subject: format!("{}:{key}", kind.trim_start_matches("custom.")),
        event: BehaviourEvent { at, behaviour },
    })
}

/// The tier update a ledger operation carries: written when something changed or the member is new.
pub(crate) fn tier_update(
    program: &TierProgram,
    state: Option<TierState>,
    ledger: &Ledger,
    enrol_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(TierState, Vec<TierChange>)> {
    let new = state.is_none();
    match earning::update_tier(program, state, ledger, enrol_at, now) {
        Ok((s, changes)) if new || !changes.is_empty() => Some((s, changes)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "tier not updated: the member's tier state does not fit the tier program");
            None
        }
    }
}

/// Setting under which the tier program lives (JSON).
const TIERS_SETTING: &str = "loyalty.tiers";

/// The tier program shipped with Huiyuan, stored on a shop's first start.
pub fn default_tiers() -> TierProgram {
    TierProgram::from_toml(crate::loyalty::tiers::EXAMPLE_TOML)
        .unwrap_or_else(|e| panic!("the built-in tier program does not load: {e}"))
}

/// The rule set shipped with Huiyuan, stored as version 1 on a shop's first start so earning works at once.
pub fn default_rules() -> RuleSet {
    let mut set = RuleSet::from_toml(crate::loyalty::rules::EXAMPLE_TOML).unwrap_or_else(|e| {
        // The example is tested to parse; this only guards a broken build.
        panic!("the built-in rule set does not load: {e}")
    });
    set.version = 1;
    set
}

/// Why a new rule-set version was refused.
#[derive(Debug)]
pub enum RulesRefused {
    Invalid(RuleSetError),
    /// The version is not the next one: someone else stored a version first.
    VersionConflict {
        current: i64,
    },
}

/// Settles the loyalty queue. One per process; settling is serialized within the process.
pub struct Earner {
    store: Arc<dyn Store>,
    ledger: LedgerConfig,
    gate: tokio::sync::Mutex<()>,
    /// The policies last read, with the stored state they were parsed from.
    policies: std::sync::Mutex<Option<(PolicyStamp, Policies)>>,
}

/// The rules, tier program and risk policy in force, parsed: what every earning decision reads.
#[derive(Clone)]
pub(crate) struct Policies {
    rules: Arc<RuleSet>,
    program: Option<Arc<TierProgram>>,
    risk: Arc<RiskPolicy>,
}

/// What the policies were parsed from: the rule-set version (versions are never edited) and the stored tier
/// program and risk policy texts. Equal stamps mean equal policies, so nothing is parsed again.
#[derive(Clone, PartialEq, Eq)]
struct PolicyStamp {
    version: i64,
    tiers: Option<String>,
    risk: Option<String>,
}

/// Earning on orders inside the transaction that writes them (`Store::insert_order_group`).
pub struct OrderEarner {
    ledger: LedgerConfig,
    policies: Policies,
    now: DateTime<Utc>,
}

impl crate::store::OrderEarning for OrderEarner {
    fn wants_cards(&self) -> bool {
        self.policies.program.as_ref().is_some_and(|p| !p.cards.is_empty())
    }

    fn jobs(&self, inputs: crate::store::EarnInputs) -> Vec<LedgerJob> {
        let crate::store::EarnInputs { orders, facts, first_paid, catalog, mut cards } = inputs;
        let mut per_member: BTreeMap<MemberId, Vec<Work>> = BTreeMap::new();
        for o in &orders {
            let Some(member) = o.member_id else { continue };
            per_member.entry(member).or_default().push(Work::Order {
                order_id: o.id,
                order: RuleOrder::from_view(o, |sku| catalog.get(sku).cloned().unwrap_or((None, None))),
                first_paid: first_paid.get(&member) == Some(&o.id),
            });
        }
        per_member
            .into_iter()
            .map(|(member, work)| LedgerJob {
                member,
                op: member_op(
                    self.ledger.clone(),
                    facts.get(&member).cloned(),
                    cards.remove(&member).unwrap_or_default(),
                    work,
                    &self.policies,
                    self.now,
                ),
                tasks: Vec::new(),
            })
            .collect()
    }
}

/// One settled task's data, loaded before the member's transaction.
enum Work {
    Order {
        order_id: i64,
        order: RuleOrder,
        first_paid: bool,
    },
    Refund(crate::store::RefundReversal),
    Behaviour(BehaviourInput),
    Member {
        registered_at: DateTime<Utc>,
        profile_complete: bool,
        at: DateTime<Utc>,
    },
    /// The referrer's share of a referral, on the referee's first paid order.
    Referral {
        referee: MemberId,
        order_id: i64,
        placed_at: DateTime<Utc>,
    },
}

impl Earner {
    pub fn new(store: Arc<dyn Store>, ledger: LedgerConfig) -> Self {
        Self { store, ledger, gate: tokio::sync::Mutex::new(()), policies: std::sync::Mutex::new(None) }
    }

    /// The rule set in force (the newest version).
    pub async fn rules(&self) -> Result<Option<(RuleSetRecord, RuleSet)>, StoreError> {
        match self.store.rule_set(None).await? {
            None => Ok(None),
            Some((rec, body)) => {
                let set = RuleSet::from_json(&body)
                    .map_err(|e| StoreError::Corrupt(format!("rule set version {}: {e}", rec.version)))?;
                Ok(Some((rec, set)))
            }
        }
    }

    /// Store a new version; it must be exactly the next version number.
    pub async fn put_rules(
        &self,
        set: &RuleSet,
        actor: &Actor,
    ) -> Result<Result<RuleSetRecord, RulesRefused>, StoreError> {
        if let Err(e) = set.validate() {
            return Ok(Err(RulesRefused::Invalid(RuleSetError::Invalid(e))));
        }
        let body = serde_json::to_string(set).map_err(|e| StoreError::Corrupt(format!("rule set: {e}")))?;
        match self.store.insert_rule_set(i64::from(set.version), &body, actor).await? {
            Ok(()) => {
                Ok(Ok(RuleSetRecord { version: i64::from(set.version), created_at: actor.at, actor: actor.id.clone() }))
            }
            Err(current) => Ok(Err(RulesRefused::VersionConflict { current })),
        }
    }

    /// The tier program in force, if any.
    pub async fn tier_program(&self) -> Result<Option<TierProgram>, StoreError> {
        match self.store.setting(TIERS_SETTING).await? {
            None => Ok(None),
            Some(body) => {
                TierProgram::from_json(&body).map(Some).map_err(|e| StoreError::Corrupt(format!("tier program: {e}")))
            }
        }
    }

    /// Replace the tier program (validated). Members keep their tier until their next update; a tier code
    /// that disappears leaves those members' states unchanged (and logged) until they are moved.
    pub async fn put_tier_program(
        &self,
        program: &TierProgram,
    ) -> Result<Result<(), crate::error::Invalid>, StoreError> {
        if let Err(e) = program.validate() {
            return Ok(Err(e));
        }
        let body = serde_json::to_string(program).map_err(|e| StoreError::Corrupt(format!("tier program: {e}")))?;
        self.store.set_setting(TIERS_SETTING, &body).await?;
        Ok(Ok(()))
    }

    /// Store the built-in rules as version 1 if the shop has none.
    pub async fn ensure_rules(&self) -> Result<(), StoreError> {
        if self.store.rule_set(None).await?.is_none() {
            let actor = Actor { id: "system".into(), at: Utc::now() };
            // A concurrent first start may have stored version 1 already; either way there is one now.
            let _ = self.put_rules(&default_rules(), &actor).await?;
        }
        if self.tier_program().await?.is_none() {
            let _ = self.put_tier_program(&default_tiers()).await?;
        }
        super::risk::ensure_policy(self.store.as_ref()).await?;
        Ok(())
    }

    /// The policies in force, parsed only when the stored ones changed (one small read otherwise); `None`
    /// while the shop has no rule set.
    pub(crate) async fn policies(&self) -> Result<Option<Policies>, StoreError> {
        let (version, values) = self.store.policy_state(&[TIERS_SETTING, super::risk::RISK_SETTING]).await?;
        let Some(version) = version else { return Ok(None) };
        let mut values = values.into_iter();
        let stamp = PolicyStamp { version, tiers: values.next().flatten(), risk: values.next().flatten() };
        if let Some((cached, policies)) = self.policies.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *cached == stamp
        {
            return Ok(Some(policies.clone()));
        }
        let Some((_, body)) = self.store.rule_set(Some(version)).await? else { return Ok(None) };
        let rules =
            RuleSet::from_json(&body).map_err(|e| StoreError::Corrupt(format!("rule set version {version}: {e}")))?;
        let program = match &stamp.tiers {
            None => None,
            Some(body) => Some(Arc::new(
                TierProgram::from_json(body).map_err(|e| StoreError::Corrupt(format!("tier program: {e}")))?,
            )),
        };
        let risk = match &stamp.risk {
            None => super::risk::default_risk_policy(),
            Some(body) => RiskPolicy::from_json(body).map_err(|e| StoreError::Corrupt(format!("risk policy: {e}")))?,
        };
        let policies = Policies { rules: Arc::new(rules), program, risk: Arc::new(risk) };
        *self.policies.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, policies.clone()));
        Ok(Some(policies))
    }

    /// What an order writer earns with, or `None` while the shop has no rule set (orders are queued then).
    pub async fn order_earner(&self) -> Result<Option<OrderEarner>, StoreError> {
        Ok(self.policies().await?.map(|policies| OrderEarner {
            ledger: self.ledger.clone(),
            policies,
            now: Utc::now(),
        }))
    }

    /// Settle everything queued; returns the number of tasks settled (or marked failed).
    pub async fn settle(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.gate.lock().await;
        let mut settled = 0u64;
        loop {
            let tasks = self.store.loyalty_tasks(SETTLE_BATCH).await?;
            if tasks.is_empty() {
                return Ok(settled);
            }
            let n = tasks.len() as u64;
            self.settle_batch(tasks).await?;
            settled += n;
        }
    }

    async fn settle_batch(&self, tasks: Vec<LoyaltyTask>) -> Result<(), StoreError> {
        let Some(policies) = self.policies().await? else {
            // No rules, nothing can earn yet; tasks wait for a rule set.
            return Ok(());
        };
        let (rules, program) = (policies.rules.clone(), policies.program.clone());
        let now = Utc::now();
        let ids = |kind: &str| -> Vec<i64> {
            tasks.iter().filter(|t| t.kind == kind).filter_map(|t| t.reference.parse().ok()).collect()
        };
        let order_ids: Vec<i64> = ids("order").into_iter().chain(ids("referral")).collect();
        let orders: HashMap<i64, crate::commerce::OrderView> =
            self.store.orders_by_ids(&order_ids).await?.into_iter().map(|o| (o.id, o)).collect();
        let refunds: HashMap<i64, crate::store::RefundReversal> =
            self.store.refund_reversals(&ids("refund")).await?.into_iter().map(|r| (r.refund_id, r)).collect();
        let events: HashMap<i64, (MemberId, String, String, DateTime<Utc>)> = self
            .store
            .events_by_ids(&ids("event"))
            .await?
            .into_iter()
            .map(|(id, m, t, k, at)| (id, (m, t, k, at)))
            .collect();
        let check_in_members: Vec<MemberId> = {
            let mut v: Vec<MemberId> = events.values().filter(|e| e.1 == "check_in").map(|e| e.0).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let earliest = events.values().map(|e| e.3).min().unwrap_or_else(Utc::now);
        let check_ins = self
            .store
            .event_times_many(&check_in_members, "check_in", earliest - Duration::days(STREAK_LOOKBACK_DAYS))
            .await?;
        // Referees of referral tasks are looked up too: their referrer and first paid order decide.
        let mut members: Vec<MemberId> = tasks
            .iter()
            .map(|t| t.member_id)
            .chain(
                tasks
                    .iter()
                    .filter(|t| t.kind == "referral")
                    .filter_map(|t| t.reference.parse().ok().and_then(|id: i64| orders.get(&id)?.member_id)),
            )
            .collect();
        members.sort_unstable();
        members.dedup();
        let facts = self.store.member_facts(&members).await?;
        // Cards only exist where the program sells them: no read on the earning path otherwise.
        let mut cards = match &program {
            Some(p) if !p.cards.is_empty() => self.store.cards_of_members(&members).await?,
            _ => Default::default(),
        };
        let order_members: Vec<MemberId> = {
            // Includes the referees of referral tasks (their orders are loaded above).
            let mut v: Vec<MemberId> = orders.values().filter_map(|o| o.member_id).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let first_paid = self.store.first_paid_orders(&order_members).await?;
        let mut skus: Vec<String> = orders.values().flat_map(|o| o.lines.iter().map(|l| l.sku.clone())).collect();
        skus.sort_unstable();
        skus.dedup();
        let catalog = self.store.sku_attributes(&skus).await?;

        // Per member, in task order.
        let mut per_member: BTreeMap<MemberId, (Vec<i64>, Vec<Work>)> = BTreeMap::new();
        for t in &tasks {
            let slot = per_member.entry(t.member_id).or_default();
            slot.0.push(t.task_id);
            let id: i64 = t.reference.parse().unwrap_or(-1);
            let work = match t.kind.as_str() {
                "order" => orders.get(&id).map(|o| Work::Order {
                    order_id: o.id,
                    order: RuleOrder::from_view(o, |sku| catalog.get(sku).cloned().unwrap_or((None, None))),
                    first_paid: first_paid.get(&t.member_id) == Some(&o.id),
                }),
                "refund" => refunds.get(&id).cloned().map(Work::Refund),
                "event" => events.get(&id).and_then(|(m, kind, key, at)| {
                    let earlier = check_ins.get(m).map(Vec::as_slice).unwrap_or_default();
                    behaviour(kind, key, *at, earlier, &rules).map(Work::Behaviour)
                }),
                "member" => facts.get(&t.member_id).map(|f| Work::Member {
                    registered_at: f.registered_at,
                    profile_complete: f.profile_complete,
                    at: t.created_at,
                }),
                // Paid only when the order is the referee's first paid one and the referee names this member.
                "referral" => orders.get(&id).and_then(|o| {
                    let referee = o.member_id?;
                    let referee_facts = facts.get(&referee)?;
                    let paid = RuleOrder::from_view(o, |_| (None, None)).paid;
                    (paid && referee_facts.referred_by == Some(t.member_id) && first_paid.get(&referee) == Some(&o.id))
                        .then_some(Work::Referral { referee, order_id: o.id, placed_at: o.placed_at })
                }),
                _ => None,
            };
            // A task whose subject is gone (a refund without an order) settles with nothing to write.
            slot.1.extend(work);
        }

        let mut jobs = Vec::with_capacity(per_member.len());
        for (member, (task_ids, work)) in per_member {
            let row = facts.get(&member).cloned();
            let member_cards = cards.remove(&member).unwrap_or_default();
            let op = member_op(self.ledger.clone(), row, member_cards, work, &policies, now);
            jobs.push(LedgerJob { member, op, tasks: task_ids });
        }
        let results = self.store.ledger_apply(jobs, now).await?;
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "a loyalty task was refused and marked failed");
            }
        }
        Ok(())
    }
}

/// One member's settling as a pure ledger operation: earn (or reverse) each piece of work in order on the
/// member's history, then update the tier and judge velocity.
fn member_op(
    cfg: LedgerConfig,
    row: Option<MemberFactsRow>,
    cards: Vec<crate::loyalty::tiers::CardTerm>,
    work: Vec<Work>,
    policies: &Policies,
    now: DateTime<Utc>,
) -> LoyaltyOp {
    let (rules, program, risk) = (policies.rules.clone(), policies.program.clone(), policies.risk.clone());
    Box::new(move |history, tier_state| {
        let mut applied = Applied::default();
        let Some(row) = row.filter(|r| r.active) else {
            // Merged away: nothing earns on a member who no longer exists.
            return Ok(applied);
        };
        let mut ledger = Ledger::from_entries(cfg, history)?;
        let tier = tier_state
            .as_ref()
            .map(|s| s.tier.clone())
            .or_else(|| program.as_ref().and_then(|p| p.tiers.first().map(|t| t.code.clone())))
            .unwrap_or_default();
        let facts = |first_paid_order: bool, at: DateTime<Utc>| MemberFacts {
            benefits: earning::benefits_at(program.as_deref(), &tier, &cards, at),
            tier: tier.clone(),
            birthday: row.birthday,
            registered_at: row.registered_at,
            referred_by: row.referred_by,
            first_paid_order,
        };
        let keep = |e: Earned, applied: &mut Applied| -> Result<(), LedgerError> {
            let at = e.entries.first().map_or(row.registered_at, |x| x.at);
            if !e.entries.is_empty() {
                applied.evaluations.push(EvaluationRecord {
                    op: e.subject.clone(),
                    rule_version: i64::from(e.evaluation.rule_version),
                    evaluation: serde_json::value::to_raw_value(&earning::for_record(
                        &e.evaluation,
                        // A referral's explanation is an order rule's, like an order's.
                        e.subject.starts_with("order:") || e.subject.starts_with("referral:"),
                        &rules,
                    ))
                    .map_err(|e| LedgerError::Encode(e.to_string()))?,
                    at,
                });
            }
            applied.entries.extend(e.entries);
            Ok(())
        };
        for w in work {
            match w {
                Work::Order { order_id, order, first_paid } => {
                    let e = earning::earn_order(
                        &mut ledger,
                        order_id,
                        &order,
                        &facts(first_paid, order.placed_at),
                        &rules,
                    )?;
                    keep(e, &mut applied)?;
                }
                Work::Refund(r) => {
                    applied.entries.extend(earning::reverse_refund(
                        &mut ledger,
                        r.refund_id,
                        r.order_id,
                        &r.lines,
                        r.refunded_at,
                    )?);
                }
                Work::Behaviour(input) => {
                    let e = earning::earn_behaviour(&mut ledger, &input, &facts(false, input.event.at), &rules)?;
                    keep(e, &mut applied)?;
                }
                Work::Referral { referee, order_id, placed_at } => {
                    keep(earning::earn_referrer(&mut ledger, referee, order_id, placed_at, &rules)?, &mut applied)?;
                }
                Work::Member { registered_at, profile_complete, at } => {
                    let reg = BehaviourInput {
                        subject: "registration".into(),
                        event: BehaviourEvent { at: registered_at, behaviour: Behaviour::Registration },
                    };
                    keep(
                        earning::earn_behaviour(&mut ledger, &reg, &facts(false, registered_at), &rules)?,
                        &mut applied,
                    )?;
                    if profile_complete {
                        let p = BehaviourInput {
                            subject: "profile".into(),
                            event: BehaviourEvent { at, behaviour: Behaviour::ProfileCompletion },
                        };
                        keep(earning::earn_behaviour(&mut ledger, &p, &facts(false, at), &rules)?, &mut applied)?;
                    }
                }
            }
        }
        if let Some(p) = &program {
            applied.tier = tier_update(p, tier_state, &ledger, row.registered_at, now);
        }
        // Velocity limits: flagged, never refused; the points are earned either way.
        applied.crossings = crate::loyalty::risk::judge_earning(&risk, history, &applied.entries, now);
        Ok::<Applied, LedgerError>(applied)
    })
}

/// A member's ledger entry with the reason it exists.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// `points` or `growth`.
    pub wallet: String,
    pub amount: i64,
    /// earn, redeem, expire, adjust, reverse, transfer (a merge).
    pub kind: String,
    /// pending, available or voided.
    pub state: String,
    pub available_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The operation that wrote it (its idempotency key).
    pub op: String,
    /// What caused it: an order line, a rule at a version, a reward, an operator with a reason.
    #[schema(value_type = Object)]
    pub source: serde_json::Value,
    /// Why, in words: the rules that applied to this entry's order or behaviour and why the others did not.
    pub why: Vec<String>,
}

/// What a simulation sees of the member when no member id is given, or overrides of the member's own facts.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedMember {
    pub tier: Option<String>,
    pub birthday: Option<chrono::NaiveDate>,
    pub registered_at: Option<DateTime<Utc>>,
    pub first_paid_order: Option<bool>,
    pub referred_by: Option<MemberId>,
}

/// The subject of an entry's operation: `order:7:2:points` → `order:7`, `checkin:2026-11-23:points` →
/// `checkin:2026-11-23`.
fn subject_of(op: &str) -> &str {
    if let Some(rest) = op.strip_prefix("order:") {
        let end = rest.find(':').map_or(op.len(), |i| "order:".len() + i);
        return &op[..end];
    }
    op.strip_suffix(":points").or_else(|| op.strip_suffix(":growth")).unwrap_or(op)
}

/// Why a merge's entry exists, from the operation's request.
fn transfer_reason(e: &crate::loyalty::ledger::Entry) -> Option<String> {
    use crate::loyalty::ledger::{Request, Source, State};
    Some(match serde_json::from_str::<Request>(&e.request).ok()? {
        Request::MergeOut { into_member, .. } => {
            format!("moved to member {into_member}, into which this member was merged")
        }
        Request::MergeIn { from_member, .. } => match (&e.source, e.state) {
            (Source::OrderLine { order_id, line_no }, State::Voided) => format!(
                "record, never counted: order {order_id} line {line_no} {} {} on member {from_member} (merged into \
                 this one), so a refund of the line reverses exactly that",
                if e.amount > 0 { "earned" } else { "had reversed" },
                e.amount.abs()
            ),
            _ => format!("moved from member {from_member} when it was merged into this one"),
        },
        _ => return None,
    })
}

impl super::App {
    /// The rules in force.
    pub async fn rules_in_force(&self) -> Result<Option<(RuleSetRecord, RuleSet)>, super::AppError> {
        Ok(self.earner.rules().await?)
    }

    /// A stored version of the rules.
    pub async fn rules_version(&self, version: i64) -> Result<Option<(RuleSetRecord, RuleSet)>, super::AppError> {
        match self.store.rule_set(Some(version)).await? {
            None => Ok(None),
            Some((rec, body)) => {
                let set = RuleSet::from_json(&body)
                    .map_err(|e| StoreError::Corrupt(format!("rule set version {}: {e}", rec.version)))?;
                Ok(Some((rec, set)))
            }
        }
    }

    /// Store a new version of the rules (exactly the next version number); audited.
    pub async fn put_rules(
        &self,
        set: &RuleSet,
        who: &crate::security::Principal,
    ) -> Result<Result<RuleSetRecord, RulesRefused>, super::AppError> {
        Ok(self.earner.put_rules(set, &Actor { id: who.key_id.clone(), at: self.now() }).await?)
    }

    /// Evaluate an order or behaviour for a member (or a described member) under the rules in force or a
    /// draft, writing nothing. The member's own ledger supplies caps and once-only awards.
    pub async fn simulate(
        &self,
        member: Option<MemberId>,
        overrides: SimulatedMember,
        mut input: crate::loyalty::rules::RuleInput,
        draft: Option<RuleSet>,
    ) -> Result<Result<crate::loyalty::rules::Evaluation, crate::error::Invalid>, super::AppError> {
        use crate::error::Invalid;
        let rules = match draft {
            Some(d) => {
                if let Err(e) = d.validate() {
                    return Ok(Err(e.within("rules")));
                }
                d
            }
            None => match self.earner.rules().await? {
                Some((_, r)) => r,
                None => {
                    return Ok(Err(Invalid::new("no_rules", "rules", "no rule set is stored; send one in `rules`")));
                }
            },
        };
        let at = match &input {
            crate::loyalty::rules::RuleInput::Order(o) => o.placed_at,
            crate::loyalty::rules::RuleInput::Event(e) => e.at,
        };
        if let crate::loyalty::rules::RuleInput::Order(o) = &mut input {
            // Lines without catalog attributes take them from the catalog.
            let skus: Vec<String> = o.lines.iter().map(|l| l.sku.clone()).collect();
            let catalog = self.store.sku_attributes(&skus).await?;
            for l in &mut o.lines {
                if let Some((c, b)) = catalog.get(&l.sku) {
                    l.category_path = l.category_path.take().or_else(|| c.clone());
                    l.brand = l.brand.take().or_else(|| b.clone());
                }
            }
        }
        let mut cards = Vec::new();
        let (ledger, mut facts) = match member {
            Some(id) => {
                cards = self.store.member_cards(id).await?.into_iter().map(|c| c.term).collect();
                let Some(row) = self.store.member_facts(&[id]).await?.remove(&id).filter(|r| r.active) else {
                    return Ok(Err(Invalid::new("unknown_member", "member_id", format!("no member {id}"))));
                };
                let history = self.store.ledger_entries(id).await?;
                let ledger = Ledger::from_entries(self.ledger_config()?, &history)
                    .map_err(|e| StoreError::Corrupt(format!("ledger of member {id}: {e}")))?;
                let first_paid = self.store.first_paid_orders(&[id]).await?.is_empty();
                let facts = MemberFacts {
                    tier: self.tier_of(id).await?.unwrap_or_default(),
                    birthday: row.birthday,
                    registered_at: row.registered_at,
                    referred_by: None,
                    first_paid_order: first_paid,
                    benefits: None,
                };
                (ledger, facts)
            }
            None => (
                Ledger::new(self.ledger_config()?),
                MemberFacts {
                    tier: String::new(),
                    birthday: None,
                    registered_at: at,
                    referred_by: None,
                    first_paid_order: true,
                    benefits: None,
                },
            ),
        };
        if let Some(t) = overrides.tier {
            facts.tier = t;
        }
        if overrides.birthday.is_some() {
            facts.birthday = overrides.birthday;
        }
        if let Some(r) = overrides.registered_at {
            facts.registered_at = r;
        }
        if let Some(f) = overrides.first_paid_order {
            facts.first_paid_order = f;
        }
        if overrides.referred_by.is_some() {
            facts.referred_by = overrides.referred_by;
        }
        // The benefits of the (possibly overridden) tier and the member's cards at the input's time.
        let program = self.earner.tier_program().await?;
        facts.benefits = earning::benefits_at(program.as_ref(), &facts.tier, &cards, at);
        let snapshot = earning::snapshot(&ledger, &facts, &rules, at);
        Ok(Ok(crate::loyalty::rules::evaluate(&input, &snapshot, &rules)))
    }

    /// The member's tier code, once tiers are defined.
    pub(crate) async fn tier_of(&self, member: MemberId) -> Result<Option<String>, super::AppError> {
        Ok(self.store.member_tier(member).await?.map(|s| s.tier))
    }

    /// A member's ledger, newest first, each entry with the reasons behind it.
    pub async fn points_history(
        &self,
        member: MemberId,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, super::AppError> {
        use crate::loyalty::ledger::State;
        if self.store.member(member).await?.is_none() {
            return Ok(None);
        }
        let entries = self.store.ledger_entries(member).await?;
        let evaluations: HashMap<String, (i64, serde_json::Value)> = self
            .store
            .evaluations(member)
            .await?
            .into_iter()
            .map(|e| {
                let body = serde_json::from_str(e.evaluation.get())
                    .map_err(|x| StoreError::Corrupt(format!("evaluation {} of member {member}: {x}", e.op)))?;
                Ok((e.op, (e.rule_version, body)))
            })
            .collect::<Result<_, StoreError>>()?;
        let text = |v: serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
        let mut out = Vec::with_capacity(entries.len().min(limit));
        for e in entries.iter().rev().take(limit) {
            let (state, available_at) = match e.state {
                State::Pending { available_at } => ("pending", Some(available_at)),
                State::Available => ("available", None),
                State::Voided => ("voided", None),
            };
            let mut why = Vec::new();
            if let Some((rule_version, evaluation)) = evaluations.get(subject_of(&e.op)) {
                let target = match &e.source {
                    crate::loyalty::ledger::Source::OrderLine { line_no, .. } => {
                        Some(serde_json::json!({ "on": "line", "line_no": line_no }))
                    }
                    _ => None,
                };
                for x in evaluation["explanations"].as_array().into_iter().flatten() {
                    let on_target = target.as_ref().is_none_or(|t| x["target"] == *t || x["target"]["on"] == "order");
                    if on_target {
                        let mark = if x["applied"].as_bool() == Some(true) { "applied" } else { "not applied" };
                        why.push(format!(
                            "{} (v{}): {mark}: {}",
                            text(x["rule_id"].clone()),
                            rule_version,
                            text(x["reason"].clone())
                        ));
                    }
                }
            }
            if e.kind == crate::loyalty::ledger::Kind::Transfer {
                why.extend(transfer_reason(e));
            }
            out.push(HistoryEntry {
                at: e.at,
                wallet: serde_json::to_value(e.wallet).map(text).unwrap_or_default(),
                amount: e.amount,
                kind: serde_json::to_value(e.kind).map(text).unwrap_or_default(),
                state: state.to_string(),
                available_at,
                expires_at: e.expires_at,
                op: e.op.clone(),
                source: serde_json::to_value(&e.source).unwrap_or_default(),
                why,
            });
        }
        Ok(Some(out))
    }

    /// 签到: record today's check-in (once per local day, whatever the channel) and earn by the streak.
    /// Returns the streak day and what today's check-in earned (also on a repeat the same day).
    pub async fn check_in(
        &self,
        member: MemberId,
        channel: Option<String>,
    ) -> Result<Result<CheckInOutcome, crate::error::Invalid>, super::AppError> {
        let now = self.now();
        let tz = match self.earner.rules().await? {
            Some((_, r)) => r.time_zone,
            None => self.ledger_config()?.tz,
        };
        let day = now.with_timezone(&tz).date_naive();
        let input = crate::events::EventInput {
            event_type: "check_in".into(),
            occurred_at: now,
            member_id: Some(member),
            identity: None,
            anonymous_id: None,
            session_id: None,
            channel,
            sku: None,
            event_id: Some(format!("check_in:{day}")),
            properties: serde_json::Map::new(),
        };
        let stored = self.record_events(std::slice::from_ref(&input)).await?;
        let first = match stored.into_iter().next() {
            Some(crate::store::EventOutcome::Rejected(e)) => return Ok(Err(e)),
            Some(crate::store::EventOutcome::Stored) => true,
            _ => false,
        };
        let subject = format!("checkin:{day}");
        let entries = self.store.ledger_entries(member).await?;
        let mine: Vec<_> = entries.iter().filter(|e| subject_of(&e.op) == subject).collect();
        let points = mine.iter().filter(|e| e.wallet == crate::loyalty::ledger::Wallet::Points).map(|e| e.amount).sum();
        let earlier = self.store.event_times(member, "check_in", now - Duration::days(STREAK_LOOKBACK_DAYS)).await?;
        let days: Vec<_> = earlier.iter().map(|t| t.with_timezone(&tz).date_naive()).filter(|d| *d < day).collect();
        Ok(Ok(CheckInOutcome { day, streak_day: earning::streak_on(day, &days), points, first_today: first }))
    }

    /// The server's loyalty timers: settle leftovers (work a crash interrupted) and run the ledger jobs
    /// (maturing, expiry) and the coupon sweep on their intervals, until the process ends.
    pub fn spawn_loyalty_timers(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let settle_every = std::time::Duration::from_secs(app.config.loyalty.settle_interval_secs.max(1));
            let jobs_every = std::time::Duration::from_secs(app.config.loyalty.jobs_interval_secs.max(1));
            let mut settle = tokio::time::interval(settle_every);
            let mut jobs = tokio::time::interval(jobs_every);
            loop {
                tokio::select! {
                    _ = settle.tick() => {
                        if let Err(e) = app.settle_loyalty().await {
                            tracing::error!(error = %e, "settling loyalty work failed");
                        }
                    }
                    _ = jobs.tick() => {
                        match app.run_ledger_jobs(app.now()).await {
                            Ok((members, entries)) if entries > 0 => tracing::info!(members, entries, "ledger jobs ran"),
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "ledger jobs failed"),
                        }
                        match app.sweep_coupons(app.now()).await {
                            Ok((expired, reminded)) if expired + reminded > 0 => {
                                tracing::info!(expired, reminded, "coupon sweep ran");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "coupon sweep failed"),
                        }
                    }
                }
            }
        });
    }

    /// Settle everything queued (the server's timer and the bulk paths call this).
    pub async fn settle_loyalty(&self) -> Result<u64, super::AppError> {
        Ok(self.earner.settle().await?)
    }
}

/// What a check-in did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CheckInOutcome {
    /// The local day (business time zone) checked in.
    pub day: chrono::NaiveDate,
    /// 1 on the first day of a streak.
    pub streak_day: u32,
    /// Points today's check-in earned.
    pub points: i64,
    /// False when the member had already checked in today (nothing new was written).
    pub first_today: bool,
}

/// A member's tier as the API shows it: where they stand, what it gives, and how they got there.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TierView {
    pub member_id: MemberId,
    /// Tier code and display name.
    pub tier: String,
    pub name: String,
    /// Growth in the window, the keep level, the next tier and what is missing; grace and next review.
    #[schema(value_type = Object)]
    pub progress: crate::loyalty::tiers::Progress,
    /// The tier's benefits (paid cards not included).
    #[schema(value_type = Object)]
    pub benefits: crate::loyalty::tiers::Benefits,
    /// What the member enjoys now: the tier's benefits combined with every active paid card (best
    /// multiplier and discount, flags OR'ed, every birthday gift), with where each comes from.
    #[schema(value_type = Option<Object>)]
    pub effective_benefits: Option<crate::loyalty::tiers::EffectiveBenefits>,
    /// Paid cards active now.
    pub active_cards: Vec<crate::store::CardRecord>,
    /// Every change with its reason, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<TierChange>,
}

impl super::App {
    /// The member's tier, progress, benefits and tier history; `None` if the member is not enrolled.
    pub async fn tier_view(&self, member: MemberId) -> Result<Option<TierView>, super::AppError> {
        let Some(program) = self.earner.tier_program().await? else { return Ok(None) };
        let Some(state) = self.store.member_tier(member).await? else { return Ok(None) };
        let history = self.store.ledger_entries(member).await?;
        let ledger = Ledger::from_entries(self.ledger_config()?, &history)
            .map_err(|e| StoreError::Corrupt(format!("ledger of member {member}: {e}")))?;
        let growth = earning::growth_history(&ledger);
        let progress = program
            .progress(&state, &growth, self.now())
            .map_err(|e| StoreError::Corrupt(format!("tier of member {member}: {e}")))?;
        let tier = program.tier(&state.tier).cloned();
        let now = self.now();
        let active_cards: Vec<crate::store::CardRecord> =
            self.store.member_cards(member).await?.into_iter().filter(|c| c.term.is_active(now)).collect();
        let terms: Vec<crate::loyalty::tiers::CardTerm> = active_cards.iter().map(|c| c.term.clone()).collect();
        let effective =
            tier.as_ref().or(program.tiers.first()).map(|t| crate::loyalty::tiers::effective_benefits(t, &terms, now));
        Ok(Some(TierView {
            member_id: member,
            name: tier.as_ref().map_or_else(|| state.tier.clone(), |t| t.name.clone()),
            benefits: tier.map(|t| t.benefits).unwrap_or_default(),
            effective_benefits: effective,
            active_cards,
            tier: state.tier,
            progress,
            history: self.store.tier_changes(member).await?,
        }))
    }

    /// The tier program in force.
    pub async fn tier_program(&self) -> Result<Option<TierProgram>, super::AppError> {
        Ok(self.earner.tier_program().await?)
    }

    /// Replace the tier program; audited.
    pub async fn put_tier_program(
        &self,
        program: &TierProgram,
        who: &crate::security::Principal,
    ) -> Result<Result<(), crate::error::Invalid>, super::AppError> {
        let out = self.earner.put_tier_program(program).await?;
        if out.is_ok() {
            let entry = crate::security::AuditEntry {
                at: self.now(),
                actor: who.key_id.clone(),
                action: "loyalty.tiers".into(),
                member_id: None,
                detail: serde_json::json!({ "version": program.version }),
            };
            self.store.append_audit(&[entry]).await?;
        }
        Ok(out)
    }
}

/// What recording a card purchase came to.
#[derive(Debug, Clone)]
pub enum CardBought {
    Bought(crate::store::CardRecord),
    Replayed(crate::store::CardRecord),
    KeyReused,
    UnknownMember,
    /// The request is not valid (no tier program, unknown plan), naming the field.
    Invalid(crate::error::Invalid),
}

impl super::App {
    /// Record a paid card bought at the shop's checkout (付费会员): a new term, or a renewal starting where
    /// the member's current term of the plan ends. Idempotent on `(member, key)`; audited.
    pub async fn buy_card(
        &self,
        member: MemberId,
        plan: &str,
        key: &str,
        payment_ref: Option<String>,
        who: &crate::security::Principal,
    ) -> Result<CardBought, super::AppError> {
        use crate::error::Invalid;
        if self.store.member(member).await?.filter(|m| m.merged_into.is_none()).is_none() {
            return Ok(CardBought::UnknownMember);
        }
        let Some(program) = self.earner.tier_program().await? else {
            return Ok(CardBought::Invalid(Invalid::new(
                "no_tier_program",
                "plan",
                "no card plans: the tier program is not set (PUT /v1/loyalty/tiers)",
            )));
        };
        if program.card(plan).is_none() {
            let known: Vec<&str> = program.cards.iter().map(|c| c.code.as_str()).collect();
            return Ok(CardBought::Invalid(Invalid::new(
                "unknown_plan",
                "plan",
                format!("no card plan `{plan}`; the program sells: {}", known.join(", ")),
            )));
        }
        let now = self.now();
        let purchase = crate::store::CardPurchase {
            member_id: member,
            plan: plan.to_string(),
            key: key.to_string(),
            payment_ref,
            actor: crate::store::Actor { id: who.key_id.clone(), at: now },
        };
        let plan_code = plan.to_string();
        let op: crate::store::CardOp = Box::new(move |terms| program.buy_card(&plan_code, terms, now));
        Ok(match self.store.buy_card(&purchase, op).await? {
            crate::store::CardStored::Bought(c) => CardBought::Bought(c),
            crate::store::CardStored::Replayed(c) => CardBought::Replayed(c),
            crate::store::CardStored::KeyReused(_) => CardBought::KeyReused,
            crate::store::CardStored::Refused(e) => {
                CardBought::Invalid(Invalid::new("card_refused", "plan", e.to_string()))
            }
        })
    }
}
