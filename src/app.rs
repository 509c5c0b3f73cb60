//! The use cases: where validated domain input meets the vault and the store. The HTTP API, the CLI, the
//! importer and the demo generator all go through here, so they behave the same.

mod analytics;
mod coupons;
mod loyalty;
mod notify;
mod reports;
mod rewards;
mod risk;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::RwLock;

use crate::commerce::{Channel, OrderInput, OrderView, RefundDraft, RefundInput, default_channels};
use crate::config::Config;
use crate::error::Invalid;
use crate::events::{Actor as EventActor, EventInput};
use crate::members::{
    Disclosure, Identity, IdentityInput, IdentityKind, IdentityView, MemberDraft, MemberId, MemberInput, MemberView,
};
use crate::security::{AuditEntry, Principal, Role, Vault, VaultError, auth, content_digest};
use crate::store::{
    self, Actor, BuyerKey, EventOutcome, EventWrite, IdentityRecord, LinkOutcome, MemberFilter, MemberRecord,
    MemberUpsert, MergeOutcome, OrderWrite, OrdersWritten, Store, StoreError, UpsertOutcome, WriteOutcome,
};
pub use analytics::{FUNNEL_QUERY_MAX_DAYS, FunnelQueryResult, RunReport};
pub use coupons::{CouponFault, Issued, PriceRequest};
pub use loyalty::{
    CardBought, CheckInOutcome, Earner, HistoryEntry, RulesRefused, SimulatedMember, TierView, default_rules,
    default_tiers,
};
pub use notify::{DeliveryReport, WebhookCreated};
pub use rewards::Redeemed;
pub use risk::default_risk_policy;

/// Why a use case failed, for the edges to render.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("analysis: {0}")]
    Analytics(String),
    /// Another analysis run is in progress in this process.
    #[error("an analysis run is already in progress")]
    AnalysisBusy,
}

/// A member's points as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PointsView {
    pub member_id: MemberId,
    /// Spendable points; negative only after a refund clawed back points already spent.
    pub available: i64,
    /// Points waiting for their order's return window to close.
    pub pending: i64,
    /// Available points that expire within `expiring_within_days`.
    pub expiring_soon: i64,
    pub expiring_within_days: i64,
    /// 成长值: drives tiers, never spent.
    pub growth_value: i64,
    pub growth_pending: i64,
    /// The member's tier code, once tiers are defined.
    pub tier: Option<String>,
    /// Redemptions are refused while the balance is negative.
    pub redemption_blocked: bool,
}

/// What `huiyuan loyalty verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerReport {
    pub members: u64,
    pub entries: u64,
    /// Members whose ledgers break an invariant, with what is broken.
    pub violations: Vec<(MemberId, Vec<String>)>,
}

/// Why a points change was refused.
#[derive(Debug)]
pub enum PointsRefused {
    NoSuchMember,
    Ledger(crate::loyalty::ledger::LedgerError),
}

/// Setting under which the key check value lives.
const KEY_CHECK: &str = "vault.key_check";

/// The running shop: store, vault and configuration.
pub struct App {
    pub store: Arc<dyn Store>,
    vault: Arc<Vault>,
    pub config: Config,
    channels: RwLock<HashMap<String, Channel>>,
    /// Store code → its channel.
    stores: RwLock<HashMap<String, String>>,
    /// Single orders waiting to be written together.
    order_jobs: tokio::sync::mpsc::Sender<OrderJob>,
    /// Settles the loyalty queue into ledger entries.
    pub earner: Arc<Earner>,
    /// Bulk writers (import, demo) defer settling to the end, when each ledger is loaded once.
    defer_loyalty: std::sync::atomic::AtomicBool,
    /// Recently seen API keys, so a request does not cost a key look-up.
    principals: std::sync::Mutex<HashMap<String, (Option<Principal>, std::time::Instant)>>,
    /// Held for the whole of an analysis run: one run at a time per process, so a run never marks a
    /// running sibling as crashed.
    analysis: Arc<tokio::sync::Mutex<()>>,
    /// Webhook attempts by outcome since the process started, for `/metrics`.
    deliveries: notify::DeliveryTotals,
}

/// How long an authenticated key is trusted without asking the store again.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Most orders written in one group commit.
const GROUP_COMMIT_MAX: usize = 512;

/// A group commit slower than this is logged (with its size), to find where order latency's tail comes from.
const SLOW_GROUP_COMMIT: std::time::Duration = std::time::Duration::from_millis(40);

/// One order waiting for the group writer.
struct OrderJob {
    write: OrderWrite,
    actor: String,
    reply: tokio::sync::oneshot::Sender<Result<(WriteOutcome, Option<OrderView>), AppError>>,
}

/// Write queued orders: take everything waiting (up to a limit), one transaction per caller key, answer
/// each job. With no load, a batch is one order and there is no added wait.
async fn order_writer(store: Arc<dyn Store>, earner: Arc<Earner>, mut jobs: tokio::sync::mpsc::Receiver<OrderJob>) {
    while let Some(first) = jobs.recv().await {
        let mut pending = vec![first];
        while pending.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(j) => pending.push(j),
                Err(_) => break,
            }
        }
        // Audit entries name the caller, so each transaction serves one caller key.
        pending.sort_by(|a, b| a.actor.cmp(&b.actor));
        while !pending.is_empty() {
            let actor_id = pending[0].actor.clone();
            let split = pending.iter().position(|j| j.actor != actor_id).unwrap_or(pending.len());
            let group: Vec<OrderJob> = pending.drain(..split).collect();
            let (writes, replies): (Vec<OrderWrite>, Vec<_>) = group.into_iter().map(|j| (j.write, j.reply)).unzip();
            // At the stores' precision, so the created orders handed back equal what is stored.
            let actor = Actor { id: actor_id, at: Utc::now().trunc_subsecs(6) };
            let started = std::time::Instant::now();
            // Earn in the orders' own transaction, so a created order's points are on the ledger when the
            // caller hears; what had to be queued (behind a member's earlier work) is settled before answering.
            let written = match earner.order_earner().await {
                Ok(Some(earn)) => store.insert_order_group(&writes, &actor, Some(&earn)).await,
                Ok(None) => store.insert_order_group(&writes, &actor, None).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(OrdersWritten { outcomes, created, queued }) => {
                    if queued {
                        settle_or_log(&earner).await;
                    }
                    // Every order of the group waited this long: the latency tail starts here.
                    let took = started.elapsed();
                    if took >= SLOW_GROUP_COMMIT {
                        tracing::warn!(
                            orders = outcomes.len(),
                            queued,
                            ms = took.as_millis() as u64,
                            "slow group commit"
                        );
                    }
                    for ((reply, o), view) in replies.into_iter().zip(outcomes).zip(created) {
                        let _ = reply.send(Ok((o, view)));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::error!(error = %msg, orders = writes.len(), "group commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(AppError::Config(format!("order write failed: {msg}"))));
                    }
                }
            }
        }
    }
}

/// Settle the loyalty queue; a failure leaves the tasks queued for the server's timer, so it is only logged.
async fn settle_or_log(earner: &Earner) {
    if let Err(e) = earner.settle().await {
        tracing::error!(error = %e, "settling loyalty tasks failed; they stay queued");
    }
}

/// The ledger's policies from configuration.
fn ledger_config_of(config: &Config) -> Result<crate::loyalty::ledger::Config, AppError> {
    use crate::loyalty::ledger::{Config as LedgerConfig, Expiry, NegativePolicy};
    let l = &config.loyalty;
    let negative = match l.negative_policy.as_str() {
        "allow_negative" => NegativePolicy::AllowNegativeBlockRedeem,
        "clamp_at_zero" => NegativePolicy::ClampAtZero,
        other => {
            return Err(AppError::Config(format!(
                "loyalty.negative_policy `{other}`: expected allow_negative or clamp_at_zero"
            )));
        }
    };
    let tz: chrono_tz::Tz =
        config.timezone.parse().map_err(|_| AppError::Config(format!("unknown time zone `{}`", config.timezone)))?;
    Ok(LedgerConfig {
        expiry: if l.expiry_months == 0 { Expiry::Never } else { Expiry::RollingMonths(l.expiry_months) },
        tz,
        return_window: chrono::Duration::days(l.return_window_days),
        negative,
    })
}

impl App {
    /// Open the store, apply migrations, load the key (refusing a key that does not match the data), seed
    /// the default channels and ensure `HUIYUAN_ADMIN_KEY` exists.
    pub async fn start(config: Config) -> Result<App, AppError> {
        let store = store::open(&config.database_url).await?;
        store.migrate().await?;
        let vault = match &config.secret_key {
            Some(hex_key) => Vault::from_hex(hex_key)?,
            None => {
                let path: PathBuf = Config::key_file_for_sqlite(&config.database_url)
                    .filter(|_| config.key_file == Config::default().key_file)
                    .unwrap_or_else(|| config.key_file.clone());
                let (vault, created) = Vault::load_or_create(&path)?;
                if created {
                    tracing::warn!(path = %path.display(), "created a new secret key file: back it up, personal data cannot be read without it");
                }
                vault
            }
        };
        match store.setting(KEY_CHECK).await? {
            Some(kcv) if kcv != vault.check_value() => {
                return Err(AppError::Config(
                    "the secret key does not match the one this database was written with".into(),
                ));
            }
            Some(_) => {}
            None => store.set_setting(KEY_CHECK, &vault.check_value()).await?,
        }
        if store.channels().await?.is_empty() {
            let system = Actor { id: "system".into(), at: Utc::now() };
            for c in default_channels() {
                store.upsert_channel(&c, &system).await?;
            }
        }
        let earner = Arc::new(Earner::new(store.clone(), ledger_config_of(&config)?));
        earner.ensure_rules().await?;
        let (order_jobs, queue) = tokio::sync::mpsc::channel(4 * GROUP_COMMIT_MAX);
        tokio::spawn(order_writer(store.clone(), earner.clone(), queue));
        let app = App {
            store,
            vault: Arc::new(vault),
            config,
            channels: RwLock::new(HashMap::new()),
            stores: RwLock::new(HashMap::new()),
            order_jobs,
            earner,
            defer_loyalty: std::sync::atomic::AtomicBool::new(false),
            principals: std::sync::Mutex::new(HashMap::new()),
            analysis: Arc::new(tokio::sync::Mutex::new(())),
            deliveries: notify::DeliveryTotals::default(),
        };
        if let Some(k) = app.config.admin_key.clone() {
            app.store.insert_api_key(&auth::key_record(&k, Role::Admin, "HUIYUAN_ADMIN_KEY", Utc::now())).await?;
        }
        Ok(app)
    }

    /// Defer settling loyalty work (bulk loads); call [`App::settle_loyalty`] when done. Single-order writes
    /// through the group writer always settle at once.
    pub fn defer_loyalty(&self, on: bool) {
        self.defer_loyalty.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    async fn settle_now(&self) {
        if !self.defer_loyalty.load(std::sync::atomic::Ordering::Relaxed) {
            settle_or_log(&self.earner).await;
        }
    }

    /// The current time at the precision both stores keep (microseconds), so a value read back equals
    /// the value written.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    /// Create a new API key; returns the key itself, to be shown once.
    pub async fn create_key(&self, role: Role, name: &str) -> Result<(String, auth::ApiKey), AppError> {
        let (secret, rec) = auth::generate_key(role, name, self.now());
        self.store.insert_api_key(&rec).await?;
        Ok((secret, rec))
    }

    /// Who holds this bearer key, if anyone.
    /// Keys are cached for `KEY_CACHE_TTL`, so a revoked key may work that much longer.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, AppError> {
        let digest = auth::digest_key(secret);
        if let Ok(cache) = self.principals.lock()
            && let Some((p, _)) = cache.get(&digest).filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
        {
            return Ok(p.clone());
        }
        let key = self.store.api_key_by_digest(&digest).await?;
        let principal = key.filter(|k| k.revoked_at.is_none()).map(|k| Principal { key_id: k.id, role: k.role });
        if let Ok(mut cache) = self.principals.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            // Unknown keys are remembered too, so guessing keys cannot flood the store with look-ups.
            cache.insert(digest, (principal.clone(), std::time::Instant::now()));
        }
        Ok(principal)
    }

    // ---- identities and members

    /// The stored form of a normalized identity: personal kinds are sealed and blind-indexed.
    pub fn identity_record(&self, ident: &Identity, at: DateTime<Utc>) -> IdentityRecord {
        let kind = ident.kind.to_string();
        if ident.kind.is_personal() {
            IdentityRecord {
                key: self.vault.blind_index(&kind, &ident.value),
                sealed: Some(self.vault.seal(&format!("identity.{kind}"), &ident.value)),
                kind,
                linked_at: at,
            }
        } else {
            IdentityRecord { kind, key: ident.value.clone(), sealed: None, linked_at: at }
        }
    }

    fn upsert_record(&self, d: &MemberDraft, at: DateTime<Utc>) -> MemberUpsert {
        MemberUpsert {
            // A member registered in the past (an import, a channel's history) had these identities since then.
            identities: d
                .identities
                .iter()
                .map(|i| self.identity_record(i, d.registered_at.unwrap_or(at).min(at)))
                .collect(),
            name: d.name.as_ref().map(|n| (self.vault.seal("member.name", n), self.vault.blind_index("name", n))),
            gender: d.gender,
            birthday: d.birthday,
            city: d.city.clone(),
            country: d.country.clone(),
            registered_at: d.registered_at,
            registration_channel: d.registration_channel.clone(),
            consent: d.consent,
            referred_by: d.referred_by,
        }
    }

    /// Create-or-update members by identity. Invalid inputs are reported per item; valid ones are written in
    /// one transaction.
    pub async fn upsert_members(
        &self,
        inputs: &[MemberInput],
        who: &Principal,
    ) -> Result<Vec<Result<UpsertOutcome, Invalid>>, AppError> {
        let now = self.now();
        let mut results: Vec<Result<UpsertOutcome, Invalid>> = Vec::with_capacity(inputs.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            match input.validate(now) {
                Ok(d) => match self.check_member_refs(&d).await? {
                    Ok(()) => {
                        batch.push(self.upsert_record(&d, now));
                        slots.push(i);
                        results.push(Ok(UpsertOutcome::Unchanged(0)));
                    }
                    Err(e) => results.push(Err(e)),
                },
                Err(e) => results.push(Err(e)),
            }
        }
        let outcomes = self.store.upsert_members(&batch, &Actor { id: who.key_id.clone(), at: now }).await?;
        if outcomes.iter().any(|o| matches!(o, UpsertOutcome::Created(_) | UpsertOutcome::Updated(..))) {
            self.settle_now().await;
        }
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            results[slot] = Ok(outcome);
        }
        Ok(results)
    }

    /// A member input's references: its registration channel must be known and its referrer an active member.
    async fn check_member_refs(&self, d: &MemberDraft) -> Result<Result<(), Invalid>, AppError> {
        if let Err(e) = self.check_channel(d.registration_channel.as_deref(), "registration_channel").await {
            return Ok(Err(e));
        }
        if let Some(r) = d.referred_by {
            let facts = self.store.member_facts(&[r]).await?;
            if !facts.get(&r).is_some_and(|f| f.active) {
                return Ok(Err(Invalid::new(
                    "unknown_member",
                    "referred_by",
                    format!("member {r} does not exist or is no longer active"),
                )));
            }
        }
        Ok(Ok(()))
    }

    /// A member as the caller may see them. Clear personal data is audited.
    pub async fn member_view(&self, id: MemberId, who: &Principal) -> Result<Option<MemberView>, AppError> {
        let Some(rec) = self.store.member(id).await? else { return Ok(None) };
        let disclosure = who.role.disclosure(true);
        let view = self.view(rec, disclosure)?;
        if disclosure == Disclosure::Clear {
            self.store
                .append_audit(&[AuditEntry::new(
                    who,
                    self.now(),
                    "member.read_personal",
                    Some(id),
                    serde_json::json!({}),
                )])
                .await?;
        }
        Ok(Some(view))
    }

    /// A page of members; personal data is never in clear in a list.
    pub async fn list_members(
        &self,
        filter: &MemberFilter,
        after: Option<MemberId>,
        limit: i64,
        who: &Principal,
    ) -> Result<Vec<MemberView>, AppError> {
        let recs = self.store.members(filter, after, limit).await?;
        let disclosure = who.role.disclosure(false);
        recs.into_iter().map(|r| self.view(r, disclosure)).collect()
    }

    fn view(&self, rec: MemberRecord, disclosure: Disclosure) -> Result<MemberView, AppError> {
        let name = match (&rec.name_sealed, disclosure) {
            (_, Disclosure::Omitted) | (None, _) => None,
            (Some(s), Disclosure::Clear) => Some(self.vault.open("member.name", s)?),
            (Some(s), Disclosure::Masked) => {
                Some(crate::members::identity::mask_name(&self.vault.open("member.name", s)?))
            }
        };
        let identities = rec
            .identities
            .iter()
            .map(|i| {
                let kind: IdentityKind =
                    i.kind.parse().map_err(|_| StoreError::Corrupt(format!("identity kind {}", i.kind)))?;
                let plain = match &i.sealed {
                    Some(s) => self.vault.open(&format!("identity.{}", i.kind), s)?,
                    None => i.key.clone(),
                };
                let value = match disclosure {
                    Disclosure::Clear => Some(plain),
                    Disclosure::Masked => Some(kind.mask(&plain)),
                    Disclosure::Omitted => None,
                };
                Ok(IdentityView { kind, value, linked_at: i.linked_at })
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        Ok(MemberView {
            id: rec.id,
            status: rec.status,
            name,
            gender: rec.gender,
            birthday: rec.birthday.filter(|_| disclosure != Disclosure::Omitted),
            city: rec.city,
            country: rec.country,
            registered_at: rec.registered_at,
            registration_channel: rec.registration_channel,
            consent: rec.consent,
            identities,
            merged_into: rec.merged_into,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            personal_data: disclosure,
        })
    }

    /// The member who holds an identity.
    pub async fn find_member(&self, identity: &IdentityInput) -> Result<Result<Option<MemberId>, Invalid>, AppError> {
        let ident = match identity.normalize() {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let rec = self.identity_record(&ident, self.now());
        Ok(Ok(self.store.member_by_identity(&rec.kind, &rec.key).await?))
    }

    pub async fn link_identity(
        &self,
        member: MemberId,
        identity: &IdentityInput,
        who: &Principal,
    ) -> Result<Result<LinkOutcome, Invalid>, AppError> {
        let ident = match identity.normalize() {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let now = self.now();
        let rec = self.identity_record(&ident, now);
        Ok(Ok(self.store.link_identity(member, &rec, &Actor { id: who.key_id.clone(), at: now }).await?))
    }

    pub async fn merge_members(
        &self,
        into: MemberId,
        from: MemberId,
        who: &Principal,
    ) -> Result<MergeOutcome, AppError> {
        let outcome = self.store.merge_members(into, from, &Actor { id: who.key_id.clone(), at: self.now() }).await?;
        if matches!(outcome, MergeOutcome::Merged(_)) {
            // The survivor's tier is re-evaluated with the growth value it gained.
            self.settle_now().await;
        }
        Ok(outcome)
    }

    // ---- points

    /// The ledger's policies from configuration.
    pub fn ledger_config(&self) -> Result<crate::loyalty::ledger::Config, AppError> {
        ledger_config_of(&self.config)
    }

    /// A member's balances, always the sums of their ledger entries. `None` if there is no such member.
    pub async fn points(&self, member: MemberId) -> Result<Option<PointsView>, AppError> {
        if self.store.member(member).await?.is_none() {
            return Ok(None);
        }
        self.points_of(member).await.map(Some)
    }

    /// Balances of a member known to exist.
    async fn points_of(&self, member: MemberId) -> Result<PointsView, AppError> {
        let cfg = self.ledger_config()?;
        let entries = self.store.ledger_entries(member).await?;
        let ledger = crate::loyalty::ledger::Ledger::from_entries(cfg, &entries)
            .map_err(|e| StoreError::Corrupt(format!("ledger of member {member}: {e}")))?;
        let days = self.config.loyalty.expiring_soon_days;
        let b = ledger.balances(self.now(), chrono::Duration::days(days));
        Ok(PointsView {
            member_id: member,
            available: b.available,
            pending: b.pending,
            expiring_soon: b.expiring,
            expiring_within_days: days,
            growth_value: b.growth,
            growth_pending: b.growth_pending,
            tier: self.tier_of(member).await?,
            redemption_blocked: b.available < 0,
        })
    }

    /// Check every member's ledger against every invariant (sums, unique keys, lots never over-consumed,
    /// no negative balance outside the policy, reversals within what was earned, expiries only when due).
    pub async fn verify_ledgers(&self) -> Result<LedgerReport, AppError> {
        let policy = self.ledger_config()?.negative;
        let mut report = LedgerReport::default();
        let mut after = 0;
        loop {
            let members = self.store.ledger_members(after, 1000).await?;
            let Some(&last) = members.last() else { break };
            for m in members {
                let entries = self.store.ledger_entries(m).await?;
                report.members += 1;
                report.entries += entries.len() as u64;
                // Checking is CPU work; keep it off the async workers.
                let found = tokio::task::spawn_blocking(move || crate::loyalty::ledger::verify(&entries, policy))
                    .await
                    .map_err(|e| AppError::Config(format!("verification task failed: {e}")))?;
                if !found.is_empty() {
                    report.violations.push((m, found.iter().map(ToString::to_string).collect()));
                }
            }
            after = last;
        }
        Ok(report)
    }

    /// The ledger's scheduled work as of `now`: pending points whose return window closed become available,
    /// then lots past their expiry expire. Idempotent (each step's key derives from its lot), so running it
    /// twice, or after a crash, changes nothing more. Returns (members touched, entries written).
    pub async fn run_ledger_jobs(&self, now: DateTime<Utc>) -> Result<(u64, u64), AppError> {
        let cfg = self.ledger_config()?;
        let program = self.earner.tier_program().await?.map(Arc::new);
        let warn_within = chrono::Duration::days(self.config.loyalty.expiring_soon_days.max(0));
        let (mut members, mut written) = (0u64, 0u64);
        let mut after = 0;
        loop {
            let ids = self.store.ledger_members(after, 500).await?;
            let Some(&last) = ids.last() else { break };
            let jobs = ids
                .iter()
                .map(|&m| {
                    let cfg = cfg.clone();
                    let program = program.clone();
                    let op: store::LoyaltyOp = Box::new(move |history, tier_state| {
                        let mut ledger = crate::loyalty::ledger::Ledger::from_entries(cfg, history)?;
                        let mut entries = ledger.mature(now)?;
                        entries.extend(ledger.expire_due(now)?);
                        // Scheduled tier work (re-evaluation, grace ends) and upgrades from matured growth.
                        let enrol_at = history.first().map_or(now, |e| e.at);
                        let tier = program
                            .as_deref()
                            .and_then(|p| loyalty::tier_update(p, tier_state, &ledger, enrol_at, now));
                        // Warn of points about to expire (one event per expiry date, however often this runs).
                        let tz = ledger.config().tz;
                        let events = crate::notify::points_expiring(m, ledger.lots(), now, warn_within, tz);
                        Ok(store::Applied { entries, evaluations: Vec::new(), tier, crossings: Vec::new(), events })
                    });
                    store::LedgerJob { member: m, op, tasks: Vec::new() }
                })
                .collect();
            for (m, r) in ids.iter().zip(self.store.ledger_apply(jobs, now).await?) {
                match r {
                    Ok(entries) if !entries.is_empty() => {
                        members += 1;
                        written += entries.len() as u64;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(member = m, error = %e, "ledger job refused"),
                }
            }
            after = last;
        }
        Ok((members, written))
    }

    /// An operator's adjustment, positive or negative, idempotent on `key`.
    pub async fn adjust_points(
        &self,
        member: MemberId,
        wallet: crate::loyalty::ledger::Wallet,
        amount: i64,
        reason: &str,
        key: &str,
        who: &Principal,
    ) -> Result<Result<(usize, PointsView), PointsRefused>, AppError> {
        match self.store.member(member).await? {
            Some(m) if m.status == crate::members::MemberStatus::Active => {}
            _ => return Ok(Err(PointsRefused::NoSuchMember)),
        }
        let cfg = self.ledger_config()?;
        let (op_key, operator, reason, at) =
            (format!("adjust:{key}"), who.key_id.clone(), reason.to_string(), self.now());
        let op: crate::store::LedgerOp = Box::new(move |history| {
            // A retry is judged on what the caller sent, not on when it arrived: reuse the first attempt's time.
            let at = history.iter().find(|e| e.op == op_key).map_or(at, |e| e.at);
            let mut ledger = crate::loyalty::ledger::Ledger::from_entries(cfg, &history)?;
            Ok(ledger.adjust(&op_key, wallet, amount, &operator, &reason, at)?.entries)
        });
        let entries = match self.store.ledger_write(member, op).await? {
            Ok(e) => e,
            Err(e) => return Ok(Err(PointsRefused::Ledger(e))),
        };
        let view = self.points_of(member).await?;
        Ok(Ok((entries.len(), view)))
    }

    // ---- channels

    async fn check_channel(&self, code: Option<&str>, field: &str) -> Result<(), Invalid> {
        let Some(code) = code else { return Ok(()) };
        if self.channels.read().await.contains_key(code) {
            return Ok(());
        }
        // Channels change rarely; reload on a miss so one added through another process is seen.
        if let Ok(all) = self.store.channels().await {
            let mut cache = self.channels.write().await;
            *cache = all.into_iter().map(|c| (c.code.clone(), c)).collect();
            if cache.contains_key(code) {
                return Ok(());
            }
        }
        Err(Invalid::new(
            "unknown_channel",
            field,
            format!("unknown channel `{code}`; add it under /v1/channels first"),
        ))
    }

    /// A store code must name a known store of the order's channel.
    async fn check_store(&self, code: Option<&str>, channel: &str) -> Result<(), Invalid> {
        let Some(code) = code else { return Ok(()) };
        let cached = self.stores.read().await.get(code).cloned();
        let found = match cached {
            Some(c) => Some(c),
            None => match self.store.stores().await {
                Ok(all) => {
                    let mut cache = self.stores.write().await;
                    *cache = all.into_iter().map(|s| (s.code, s.channel)).collect();
                    cache.get(code).cloned()
                }
                Err(_) => None,
            },
        };
        match found {
            Some(c) if c == channel => Ok(()),
            Some(c) => {
                Err(Invalid::new("store_channel_mismatch", "store", format!("store `{code}` belongs to channel `{c}`")))
            }
            None => Err(Invalid::new(
                "unknown_store",
                "store",
                format!("unknown store `{code}`; add it under /v1/stores first"),
            )),
        }
    }

    /// Forget cached channels and stores after a change.
    pub async fn channels_changed(&self) {
        self.channels.write().await.clear();
        self.stores.write().await.clear();
    }

    // ---- orders, refunds, events

    /// Validate orders and put them in stored form; invalid ones are answered at once.
    async fn prepare_orders(&self, inputs: &[OrderInput]) -> (Vec<WriteOutcome>, Vec<OrderWrite>, Vec<usize>) {
        let now = self.now();
        let mut results: Vec<WriteOutcome> = Vec::with_capacity(inputs.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let draft = match input.validate(&self.config.currency, now) {
                Ok(d) => d,
                Err(e) => {
                    results.push(WriteOutcome::Rejected(e));
                    continue;
                }
            };
            if let Err(e) = self.check_channel(Some(&draft.channel), "channel").await {
                results.push(WriteOutcome::Rejected(e));
                continue;
            }
            if let Err(e) = self.check_store(draft.store.as_deref(), &draft.channel).await {
                results.push(WriteOutcome::Rejected(e));
                continue;
            }
            let buyer = match &draft.buyer {
                crate::commerce::order::Buyer::Member(id) => BuyerKey::Member(*id),
                crate::commerce::order::Buyer::Identity(ident) => {
                    BuyerKey::Identity(self.identity_record(ident, draft.placed_at))
                }
                crate::commerce::order::Buyer::Guest => BuyerKey::Guest,
            };
            let digest = content_digest(&draft);
            batch.push(OrderWrite { draft, buyer, digest });
            slots.push(i);
            results.push(WriteOutcome::Duplicate(0));
        }
        (results, batch, slots)
    }

    /// Validate and store a batch of orders in one transaction. Each is idempotent on `(channel, order_no)`.
    pub async fn record_orders(&self, inputs: &[OrderInput], who: &Principal) -> Result<Vec<WriteOutcome>, AppError> {
        let (mut results, batch, slots) = self.prepare_orders(inputs).await;
        if !batch.is_empty() {
            let outcomes = self.store.insert_orders(&batch, &Actor { id: who.key_id.clone(), at: self.now() }).await?;
            if outcomes.iter().any(|o| matches!(o, WriteOutcome::Created(_))) {
                self.settle_now().await;
            }
            for (slot, o) in slots.into_iter().zip(outcomes) {
                results[slot] = o;
            }
        }
        Ok(results)
    }

    /// Store one order, sharing a transaction with orders from concurrent requests (group commit): under
    /// load, one commit serves many requests, which is what lets a single SQLite writer keep up. A created
    /// order comes back as stored, so the caller need not read it.
    pub async fn record_order(
        &self,
        input: &OrderInput,
        who: &Principal,
    ) -> Result<(WriteOutcome, Option<OrderView>), AppError> {
        let (mut results, mut batch, _) = self.prepare_orders(std::slice::from_ref(input)).await;
        let Some(write) = batch.pop() else {
            return Ok((results.pop().unwrap_or(WriteOutcome::Rejected(Invalid::missing("order"))), None));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = OrderJob { write, actor: who.key_id.clone(), reply };
        if self.order_jobs.send(job).await.is_err() {
            return Err(AppError::Config("the order writer has stopped".into()));
        }
        answer.await.map_err(|_| AppError::Config("the order writer has stopped".into()))?
    }

    /// Store a refund against an order, idempotent on `(channel, refund_no)`.
    pub async fn record_refund(&self, input: &RefundInput, who: &Principal) -> Result<WriteOutcome, AppError> {
        if let Err(e) = input.validate_header() {
            return Ok(WriteOutcome::Rejected(e));
        }
        let digest = content_digest(input);
        let out = self.store.insert_refund(input, &digest, &Actor { id: who.key_id.clone(), at: self.now() }).await?;
        if matches!(out, WriteOutcome::Created(_)) {
            self.settle_now().await;
        }
        // Coupons used on the order come back per policy; a retried refund (duplicate) tries again.
        if let WriteOutcome::Created(id) | WriteOutcome::Duplicate(id) = out
            && let Some(order_id) = self.store.refund(id).await?.and_then(|r| r.order_id)
        {
            self.return_coupons_of(order_id).await?;
        }
        Ok(out)
    }

    /// Store refunds planned by an importer (history whose lines may predate the data).
    pub async fn import_refunds(&self, drafts: &[RefundDraft]) -> Result<Vec<WriteOutcome>, AppError> {
        let batch: Vec<(RefundDraft, Vec<u8>)> = drafts.iter().map(|d| (d.clone(), content_digest(d))).collect();
        let out = self.store.import_refunds(&batch).await?;
        if out.iter().any(|o| matches!(o, WriteOutcome::Created(_))) {
            self.settle_now().await;
        }
        Ok(out)
    }

    /// Validate and store a batch of events: valid ones are stored, each rejected one says why.
    pub async fn record_events(&self, inputs: &[EventInput]) -> Result<Vec<EventOutcome>, AppError> {
        let now = self.now();
        let mut results: Vec<EventOutcome> = Vec::with_capacity(inputs.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let draft = match input.validate(now) {
                Ok(d) => d,
                Err(e) => {
                    results.push(EventOutcome::Rejected(e));
                    continue;
                }
            };
            if let Err(e) = self.check_channel(Some(&draft.channel), "channel").await {
                results.push(EventOutcome::Rejected(e));
                continue;
            }
            let actor = match &draft.actor {
                EventActor::Member(id) => BuyerKey::Member(*id),
                EventActor::Identity(ident) => BuyerKey::Identity(self.identity_record(ident, draft.occurred_at)),
                EventActor::Anonymous => BuyerKey::Guest,
            };
            batch.push(EventWrite { draft, actor });
            slots.push(i);
            results.push(EventOutcome::Stored);
        }
        if !batch.is_empty() {
            let earning = batch.iter().any(|w| crate::loyalty::earning::earns(&w.draft.event_type.name()));
            let outcomes = self.store.insert_events(&batch).await?;
            if earning {
                self.settle_now().await;
            }
            for (slot, o) in slots.into_iter().zip(outcomes) {
                results[slot] = o;
            }
        }
        Ok(results)
    }
}
