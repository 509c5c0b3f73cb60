//! Storage: one interface, two implementations (SQLite, the embedded default; PostgreSQL, the production
//! store), one conformance suite run against both. The store keeps the invariants that need a
//! transaction (identity uniqueness, idempotent natural keys, refund limits, audited changes); everything
//! else is decided by the pure domain code before it gets here.
//!
//! Architecture invariant: records here carry personal data only as ciphertext and blind indexes; the
//! store never sees a key.

mod analytics;
mod body_codec;
mod cards;
mod common;
mod coupons;
mod evaluation_codec;
mod loyalty;
mod outbox;
pub mod postgres;
mod rewards;
mod risk;
pub mod sqlite;
mod sqlite_scan;
mod ts;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::commerce::{Channel, OrderDraft, OrderView, RefundDraft, RefundInput, RefundView, Sku, StoreLocation};
use crate::error::Invalid;
use crate::events::{EventDraft, EventView};
use crate::members::{Consent, ConsentInput, Gender, MemberId, MemberStatus};
use crate::security::{ApiKey, AuditEntry};

/// Failures of the storage layer. Validation happens before the store; these are about the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A bulk read on SQLite's own interface (`sqlite_scan`) failed.
    #[error("database error: {0}")]
    Scan(String),
    /// A run's member results could not be read back from where the analysis spilled them.
    #[error("reading a run's spilled member results: {0}")]
    Spill(#[from] std::io::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Orders that count as purchases in the analytics reads: paid and not cancelled.
pub(crate) const PURCHASED: &str = "status IN ('paid', 'shipped', 'completed')";

/// The UTC day of a day number (days since 1970-01-01), as the analytics reads compute it in SQL.
pub(crate) fn epoch_day(d: i64) -> StoreResult<NaiveDate> {
    i32::try_from(d)
        .ok()
        .and_then(|d| NaiveDate::from_num_days_from_ce_opt(d.checked_add(719_163)?))
        .ok_or_else(|| StoreError::Corrupt(format!("day {d} out of range")))
}

/// Which database is behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Who made a change and when: written to the audit log in the same transaction as the change.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub at: DateTime<Utc>,
}

/// An identity in stored form. For phone and email, `key` is a blind index and `sealed` the ciphertext;
/// for other kinds, `key` is the normalized value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub kind: String,
    pub key: String,
    pub sealed: Option<Vec<u8>>,
    pub linked_at: DateTime<Utc>,
}

/// A member in stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub id: MemberId,
    pub status: MemberStatus,
    pub name_sealed: Option<Vec<u8>>,
    pub gender: Option<Gender>,
    pub birthday: Option<NaiveDate>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub registration_channel: Option<String>,
    pub consent: Consent,
    pub merged_into: Option<MemberId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub identities: Vec<IdentityRecord>,
}

/// Create-or-update by identity, in stored form. `name_digest` is the blind index of the name, so the store
/// can tell whether a name changed without decrypting it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberUpsert {
    pub identities: Vec<IdentityRecord>,
    pub name: Option<(Vec<u8>, String)>,
    pub gender: Option<Gender>,
    pub birthday: Option<NaiveDate>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub registered_at: Option<DateTime<Utc>>,
    pub registration_channel: Option<String>,
    pub consent: ConsentInput,
    /// The member who referred this one; recorded once (the first referral stands).
    pub referred_by: Option<MemberId>,
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created(MemberId),
    /// Updated; the names of the fields that changed (identities added count as `identities`).
    Updated(MemberId, Vec<String>),
    Unchanged(MemberId),
    /// The identities belong to more than one member: a merge is needed first.
    Conflict(Vec<MemberId>),
}

impl UpsertOutcome {
    pub fn member_id(&self) -> Option<MemberId> {
        match self {
            UpsertOutcome::Created(id) | UpsertOutcome::Updated(id, _) | UpsertOutcome::Unchanged(id) => Some(*id),
            UpsertOutcome::Conflict(_) => None,
        }
    }
}

/// How an order's or event's buyer is given to the store, identity already in stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyerKey {
    Member(MemberId),
    Identity(IdentityRecord),
    Guest,
}

/// An order ready to store: the validated draft, the buyer in stored form and the content digest that
/// makes retries idempotent.
#[derive(Debug, Clone)]
pub struct OrderWrite {
    pub draft: OrderDraft,
    pub buyer: BuyerKey,
    pub digest: Vec<u8>,
}

/// What one group write of orders did: an outcome per order, in order, with the stored form of each created
/// order (so the caller answers without reading it back), and whether loyalty work was left queued.
#[derive(Debug, Clone)]
pub struct OrdersWritten {
    pub outcomes: Vec<WriteOutcome>,
    /// `Some` exactly where the outcome is `Created`.
    pub created: Vec<Option<OrderView>>,
    /// Loyalty tasks were queued (the caller settles the queue then).
    pub queued: bool,
}

/// What storing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Created(i64),
    /// The same natural key with the same content was stored before: nothing written.
    Duplicate(i64),
    /// The same natural key with different content: refused.
    Conflict(i64),
    Rejected(Invalid),
}

/// An event ready to store, actor in stored form.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub draft: EventDraft,
    pub actor: BuyerKey,
}

/// Per-event result of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Stored,
    Duplicate,
    Rejected(Invalid),
}

/// Filters for listing members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberFilter {
    /// Registration channel code.
    pub channel: Option<String>,
    pub city: Option<String>,
    pub status: Option<MemberStatus>,
    pub registered_from: Option<DateTime<Utc>>,
    pub registered_to: Option<DateTime<Utc>>,
}

/// The record of a merge, detailed enough to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MergeRecord {
    pub merge_id: i64,
    pub into_member_id: MemberId,
    pub from_member_id: MemberId,
    pub merged_at: DateTime<Utc>,
    pub actor: String,
    /// Everything that moved (identity keys, order, refund and event ids) and the fields filled in.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What linking an identity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked {
        events_moved: u64,
    },
    AlreadyLinked,
    /// The identity belongs to another member; nothing changed.
    OwnedBy(MemberId),
    NoSuchMember,
}

/// Why a merge was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeOutcome {
    Merged(MergeRecord),
    NotFound(MemberId),
    NotActive(MemberId),
    Same,
}

/// Answer to "has this idempotency key been used?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use: go ahead, then call `idempotency_finish`.
    New,
    /// Used before with the same request: replay the stored response.
    Replay { status: u16, body: String },
    /// Used before with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// Counts of everything, for `huiyuan stats` and `GET /v1/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub members: i64,
    pub merged_members: i64,
    pub member_orders: i64,
    pub guest_orders: i64,
    pub refunds: i64,
    pub guest_refunds: i64,
    pub events: i64,
    pub unlinked_events: i64,
    pub skus: i64,
}

/// Totals already refunded on one order, for planning the next refund.
#[derive(Debug, Clone, Default)]
pub struct RefundState {
    pub lines: crate::commerce::refund::Refunded,
    pub shipping: i64,
}

/// The storage interface. Every method is one transaction; batch methods take a batch so bulk import and
/// the HTTP API share one code path.
#[async_trait]
pub trait Store:
    LoyaltyStore + RewardStore + RiskStore + OutboxStore + CouponStore + AnalyticsStore + CardStore + Send + Sync + 'static
{
    fn backend(&self) -> Backend;

    /// Apply pending schema migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// Leave nothing pending for the next process: a command-line run that wrote in bulk calls this before
    /// it exits. On SQLite the write-ahead log is copied into the database file and truncated: left
    /// behind (gigabytes after an analysis run, with no server's checkpointer to copy it), every read of the
    /// next process would look its pages up in the log first. PostgreSQL has nothing to do.
    async fn flush(&self) -> StoreResult<()>;

    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// The newest rule-set version and the values of `keys`, in one round trip: enough for a cache of parsed
    /// loyalty policies to tell whether it is still current without parsing anything.
    async fn policy_state(&self, keys: &[&str]) -> StoreResult<(Option<i64>, Vec<Option<String>>)>;
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    // --- keys and audit
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<bool>;
    async fn api_key_by_digest(&self, digest: &str) -> StoreResult<Option<ApiKey>>;
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()>;
    async fn audit_log(&self, member_id: Option<MemberId>, limit: i64) -> StoreResult<Vec<AuditEntry>>;

    // --- channels, stores, catalog
    async fn upsert_channel(&self, channel: &Channel, actor: &Actor) -> StoreResult<()>;
    async fn channels(&self) -> StoreResult<Vec<Channel>>;
    async fn upsert_store(&self, store: &StoreLocation, actor: &Actor) -> StoreResult<()>;
    async fn stores(&self) -> StoreResult<Vec<StoreLocation>>;
    /// Insert or replace catalog entries; with `only_missing`, existing entries are left alone.
    async fn upsert_skus(&self, skus: &[Sku], only_missing: bool) -> StoreResult<u64>;
    async fn sku(&self, sku: &str) -> StoreResult<Option<Sku>>;
    async fn skus(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<Sku>>;

    // --- members
    /// Create-or-update each member by identity, all in one transaction; changes are audited.
    async fn upsert_members(&self, batch: &[MemberUpsert], actor: &Actor) -> StoreResult<Vec<UpsertOutcome>>;
    async fn member(&self, id: MemberId) -> StoreResult<Option<MemberRecord>>;
    /// The member a merge chain from `id` ends at (`id` itself if never merged); `None` if unknown.
    async fn live_member(&self, id: MemberId) -> StoreResult<Option<MemberId>>;
    async fn member_by_identity(&self, kind: &str, key: &str) -> StoreResult<Option<MemberId>>;
    /// Members in id order after the cursor.
    async fn members(
        &self,
        filter: &MemberFilter,
        after: Option<MemberId>,
        limit: i64,
    ) -> StoreResult<Vec<MemberRecord>>;
    /// Link an identity to a member; an anonymous id also brings its unlinked events along.
    async fn link_identity(
        &self,
        member: MemberId,
        identity: &IdentityRecord,
        actor: &Actor,
    ) -> StoreResult<LinkOutcome>;
    async fn merge_members(&self, into: MemberId, from: MemberId, actor: &Actor) -> StoreResult<MergeOutcome>;

    // --- orders and refunds
    async fn insert_orders(&self, batch: &[OrderWrite], actor: &Actor) -> StoreResult<Vec<WriteOutcome>>;
    /// `insert_orders` for the group writer: with `earn`, the created orders earn in the same transaction
    /// (one commit instead of an insert, a queue round trip and a second commit). An order whose buyer already
    /// has loyalty work queued is queued behind it instead, so each member's work still applies in order; so
    /// is a referrer's share. Without `earn` (no rule set), every created order's work is queued.
    async fn insert_order_group(
        &self,
        batch: &[OrderWrite],
        actor: &Actor,
        earn: Option<&dyn OrderEarning>,
    ) -> StoreResult<OrdersWritten>;
    async fn order(&self, id: i64) -> StoreResult<Option<OrderView>>;
    async fn order_id_by_no(&self, channel: &str, order_no: &str) -> StoreResult<Option<i64>>;
    async fn member_orders(&self, member: MemberId, before: Option<i64>, limit: i64) -> StoreResult<Vec<OrderView>>;
    /// Plan (with the pure refund rules) and store a refund against one order, atomically.
    async fn insert_refund(&self, input: &RefundInput, digest: &[u8], actor: &Actor) -> StoreResult<WriteOutcome>;
    /// Store refunds planned elsewhere (bulk import of history), idempotent on `(channel, refund_no)`.
    async fn import_refunds(&self, batch: &[(RefundDraft, Vec<u8>)]) -> StoreResult<Vec<WriteOutcome>>;
    async fn refund(&self, id: i64) -> StoreResult<Option<RefundView>>;

    // --- events
    async fn insert_events(&self, batch: &[EventWrite]) -> StoreResult<Vec<EventOutcome>>;
    async fn member_events(&self, member: MemberId, limit: i64) -> StoreResult<Vec<EventView>>;

    // --- idempotency keys for writes without a natural key
    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_digest: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyBegin>;
    async fn idempotency_finish(&self, scope: &str, key: &str, status: u16, body: &str) -> StoreResult<()>;
    /// Forget a key whose request failed before writing anything, so it can be retried.
    async fn idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()>;

    async fn stats(&self) -> StoreResult<Stats>;

    // --- loyalty ledger
    /// Members who have ledger entries, in id order after the cursor (for `huiyuan loyalty verify`).
    async fn ledger_members(&self, after: MemberId, limit: i64) -> StoreResult<Vec<MemberId>>;
    /// A member's ledger entries in the order they were written.
    async fn ledger_entries(&self, member: MemberId) -> StoreResult<Vec<LedgerEntry>>;
    /// Run a pure ledger operation under the member's lock and append what it returns, in one transaction:
    /// `op` receives the member's stored entries and returns its outcome's entries; those not stored yet are
    /// appended (a replayed operation returns its original entries, which are not written again).
    /// Concurrent writers for one member are serialized, so the kernel always decides on the latest history.
    async fn ledger_write(&self, member: MemberId, op: LedgerOp) -> StoreResult<Result<Vec<LedgerEntry>, LedgerError>>;
}

pub use crate::loyalty::ledger::{Entry as LedgerEntry, LedgerError};

/// A pure ledger operation, run by `Store::ledger_write` inside the member's transaction.
pub type LedgerOp = Box<dyn FnOnce(Vec<LedgerEntry>) -> Result<Vec<LedgerEntry>, LedgerError> + Send>;

/// Prepared statements kept per connection (sqlx's default is 100, fewer than the texts one batched write
/// path produces).
const STATEMENT_CACHE: usize = 1024;

/// Open the store a URL names: `sqlite://PATH` (created if missing) or `postgres://…`.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}

/// A stored version of the earning rules (the body is kept as written, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleSetRecord {
    pub version: i64,
    pub created_at: DateTime<Utc>,
    /// The API key that stored it.
    pub actor: String,
}

/// Work the loyalty engine owes a member: `kind` is `order`, `refund`, `event` or `member`, `reference`
/// the id of the order, refund, event or member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoyaltyTask {
    pub task_id: i64,
    pub member_id: MemberId,
    pub kind: String,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

/// The rule evaluation behind an operation, kept so a member's history can say why each entry exists.
#[derive(Debug, Clone)]
pub struct EvaluationRecord {
    /// The operation subject (`order:12`, `checkin:2026-11-23`, …).
    pub op: String,
    pub rule_version: i64,
    /// JSON text, serialized once where it is made: a settle writes hundreds of thousands of these, and
    /// going through a `serde_json::Value` tree (built, cloned into the insert, dropped) was a third of its CPU.
    pub evaluation: Box<serde_json::value::RawValue>,
    pub at: DateTime<Utc>,
}

/// What a loyalty operation returns for the store to write.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub entries: Vec<LedgerEntry>,
    pub evaluations: Vec<EvaluationRecord>,
    /// The member's tier state after the operation and the changes that led there (new ones only).
    pub tier: Option<(TierState, Vec<TierChange>)>,
    /// Velocity limits the operation's earning crossed; the store flags the member for each rule not
    /// already open, in the same transaction.
    pub crossings: Vec<Crossing>,
    /// Events to put in the outbox in the same transaction (ids derive from the cause; repeats are ignored).
    pub events: Vec<crate::notify::Notice>,
}

pub use crate::loyalty::tiers::{TierChange, TierState};

/// A member as earning sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFactsRow {
    /// Not merged away or closed.
    pub active: bool,
    pub birthday: Option<NaiveDate>,
    pub registered_at: DateTime<Utc>,
    /// Name, gender, birthday and city are all on file.
    pub profile_complete: bool,
    /// The member who referred them, if any.
    pub referred_by: Option<MemberId>,
}

/// A pure loyalty operation over one member's ledger and tier state, run inside the batch transaction.
pub type LoyaltyOp = Box<dyn FnOnce(&[LedgerEntry], Option<TierState>) -> Result<Applied, LedgerError> + Send>;

/// What a transaction that has just written orders knows of them and their buyers, for earning on them
/// before it commits. Every map is keyed by the buyers (or SKUs) of `orders`.
pub struct EarnInputs {
    /// The orders created, as they were stored.
    pub orders: Vec<OrderView>,
    pub facts: std::collections::HashMap<MemberId, MemberFactsRow>,
    pub first_paid: std::collections::HashMap<MemberId, i64>,
    /// `(category_path, brand)` of each known SKU of the orders.
    pub catalog: std::collections::HashMap<String, (Option<String>, Option<String>)>,
    /// Paid-card terms, read only when `OrderEarning::wants_cards` says so.
    pub cards: std::collections::HashMap<MemberId, Vec<CardTerm>>,
}

/// The earning engine as an order writer sees it: turns orders just written into ledger jobs, which the
/// store applies in the same transaction. Pure apart from its inputs, so the store stays free of rules.
pub trait OrderEarning: Send + Sync {
    /// Whether jobs depend on members' paid cards (the store skips that read otherwise).
    fn wants_cards(&self) -> bool;
    /// One job per buyer, covering that buyer's orders in `inputs.orders` in order.
    fn jobs(&self, inputs: EarnInputs) -> Vec<LedgerJob>;
}

/// One member's operation in a batch, and the queued tasks it settles.
pub struct LedgerJob {
    pub member: MemberId,
    pub op: LoyaltyOp,
    pub tasks: Vec<i64>,
}

/// What a refund reverses: its order and, per refunded line, the cumulative refunded quantity as of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReversal {
    pub refund_id: i64,
    pub member_id: MemberId,
    pub order_id: i64,
    pub refunded_at: DateTime<Utc>,
    pub lines: Vec<crate::loyalty::ledger::RefundedLine>,
}

/// Storage of the loyalty engine beyond the bare ledger (`store/loyalty.rs`, shared SQL like `common.rs`).
#[async_trait]
pub trait LoyaltyStore {
    /// Every stored rule-set version, newest first.
    async fn rule_sets(&self) -> StoreResult<Vec<RuleSetRecord>>;
    /// A version's record and body; `None` asks for the newest (the one in force).
    async fn rule_set(&self, version: Option<i64>) -> StoreResult<Option<(RuleSetRecord, String)>>;
    /// Store version `version`, which must be exactly one more than the newest (so two editors cannot both
    /// win); otherwise `Err(newest)` and nothing is written. Audited.
    async fn insert_rule_set(&self, version: i64, body: &str, actor: &Actor) -> StoreResult<Result<(), i64>>;
    /// Open tasks, member by member, each member's in the order queued.
    async fn loyalty_tasks(&self, limit: i64) -> StoreResult<Vec<LoyaltyTask>>;
    /// (open, failed) task counts.
    async fn loyalty_backlog(&self) -> StoreResult<(i64, i64)>;
    /// Run each job under its member's lock and write, in one transaction, the new entries, the evaluations
    /// and the removal of the settled tasks. A refused job writes nothing and marks its tasks failed with the
    /// reason (kept for an operator, never retried blindly). Jobs of one member run in order, each seeing
    /// the entries of the ones before.
    async fn ledger_apply(
        &self,
        jobs: Vec<LedgerJob>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Result<Vec<LedgerEntry>, LedgerError>>>;
    async fn orders_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<OrderView>>;
    /// The reversal each refund calls for; refunds without an order (imported history) are left out.
    async fn refund_reversals(&self, refund_ids: &[i64]) -> StoreResult<Vec<RefundReversal>>;
    /// `(category_path, brand)` of each known SKU.
    async fn sku_attributes(
        &self,
        skus: &[String],
    ) -> StoreResult<std::collections::HashMap<String, (Option<String>, Option<String>)>>;
    /// Each member's first paid order (by time placed).
    async fn first_paid_orders(&self, members: &[MemberId]) -> StoreResult<std::collections::HashMap<MemberId, i64>>;
    /// The referrals these members are paid for, for the backtest: `(referrer, referee, order, placed_at)`
    /// for each referee of theirs whose first paid order was placed by `until`.
    async fn referral_payouts(
        &self,
        referrers: &[MemberId],
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(MemberId, MemberId, i64, DateTime<Utc>)>>;
    /// `(event_id, member, type, key, occurred_at)` of the given events.
    async fn events_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<(i64, MemberId, String, String, DateTime<Utc>)>>;
    /// When each member's events of one type happened, since `since`, oldest first.
    async fn event_times_many(
        &self,
        members: &[MemberId],
        event_type: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashMap<MemberId, Vec<DateTime<Utc>>>>;
    /// When a member's events of one type happened, since `since`, oldest first.
    async fn event_times(
        &self,
        member: MemberId,
        event_type: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>>;
    /// What earning needs to know of each member.
    async fn member_facts(&self, ids: &[MemberId]) -> StoreResult<std::collections::HashMap<MemberId, MemberFactsRow>>;
    /// A member's tier state, if enrolled.
    async fn member_tier(&self, member: MemberId) -> StoreResult<Option<TierState>>;
    /// What the backtest replays of these members up to `until`: ids of their orders, of their refunds
    /// against an order, and of their earning events (`share`, `check_in`, `custom.review`).
    async fn history_ids(
        &self,
        members: &[MemberId],
        until: DateTime<Utc>,
    ) -> StoreResult<(Vec<i64>, Vec<i64>, Vec<i64>)>;
    /// Several members' ledger entries (in the order written) and tier states, for reports that stream
    /// through the whole programme in batches.
    async fn ledgers_and_tiers(
        &self,
        members: &[MemberId],
    ) -> StoreResult<Vec<(MemberId, Vec<LedgerEntry>, Option<TierState>)>>;
    /// Each member's spendable points (the sum of their available points entries, as `Ledger::balances`
    /// counts them) and current tier code, summed in the store: for callers that scan many members and need
    /// no more than that (the demo picks who redeems), so no ledger is loaded. Members with no available
    /// points entries and no tier are absent.
    async fn available_points(
        &self,
        members: &[MemberId],
    ) -> StoreResult<std::collections::HashMap<MemberId, (i64, Option<String>)>>;
    /// A member's tier history, oldest first.
    async fn tier_changes(&self, member: MemberId) -> StoreResult<Vec<TierChange>>;
    /// The evaluations behind a member's entries, oldest first.
    async fn evaluations(&self, member: MemberId) -> StoreResult<Vec<EvaluationRecord>>;
}

pub use crate::loyalty::rewards::{CancelRefusal, RedeemRefusal, Redemption, Reward};

/// A reward in the catalog with what is left of its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRecord {
    pub reward: Reward,
    /// `None`: unlimited.
    pub stock_left: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a redemption decides on, loaded under the member's and the reward's locks.
#[derive(Debug, Clone)]
pub struct RedeemInput {
    pub history: Vec<LedgerEntry>,
    pub reward: Reward,
    pub stock_left: Option<i64>,
    /// The member's earlier redemptions of this reward.
    pub past: Vec<Redemption>,
    /// The id the new redemption gets.
    pub redemption_id: i64,
    /// The member's open risk flags: any blocks the redemption.
    pub flags: Vec<RiskFlag>,
    /// The member's redemptions of any reward within [`crate::loyalty::risk::lookback`], for velocity limits.
    pub recent: Vec<Redemption>,
}

/// What an accepted redemption writes.
#[derive(Debug, Clone)]
pub struct RedeemWrite {
    pub entries: Vec<LedgerEntry>,
    pub redemption: Redemption,
    /// Velocity limits this redemption crossed: the member is flagged (once per open rule) with it.
    pub crossings: Vec<Crossing>,
}

/// Why a redemption or its cancellation was refused.
#[derive(Debug, Clone)]
pub enum RedeemFailure {
    Refused(RedeemRefusal),
    CancelRefused(CancelRefusal),
    Ledger(LedgerError),
    /// The reward delivers a coupon and its template refused to issue one (`code`: `limit_reached`,
    /// `sold_out`, `window_closed`, `coupon_template_not_found`).
    Coupon {
        code: String,
        message: String,
    },
}

/// The pure decision of a redemption.
pub type RedeemOp = Box<dyn FnOnce(RedeemInput) -> Result<RedeemWrite, RedeemFailure> + Send>;

/// What the cancellation of a redemption decides on.
#[derive(Debug, Clone)]
pub struct CancelInput {
    pub history: Vec<LedgerEntry>,
    pub redemption: Redemption,
}

/// What an accepted cancellation writes: entries returning the points, the updated record, stock back.
#[derive(Debug, Clone)]
pub struct CancelWrite {
    pub entries: Vec<LedgerEntry>,
    pub redemption: Redemption,
    pub stock_back: i64,
}

/// The pure decision of a cancellation.
pub type CancelOp = Box<dyn FnOnce(CancelInput) -> Result<CancelWrite, RedeemFailure> + Send>;

/// What storing a redemption (or its cancellation) did.
#[derive(Debug, Clone)]
pub enum RedeemStored {
    Created(Redemption),
    /// The idempotency key was used before for this reward: the original redemption, nothing new written.
    Replayed(Redemption),
    /// The idempotency key was used before for another reward.
    KeyReused(Redemption),
    NoSuchReward,
    NoSuchRedemption,
    Failed(RedeemFailure),
}

/// The rewards catalog and redemptions (`store/rewards.rs`).
#[async_trait]
pub trait RewardStore {
    /// Create or replace a reward's definition. Stock: a new reward starts with `stock`; a changed `stock`
    /// moves what is left by the difference (never below zero); unlimited stays `None`. Audited.
    async fn put_reward(&self, reward: &Reward, actor: &Actor) -> StoreResult<RewardRecord>;
    async fn rewards(&self) -> StoreResult<Vec<RewardRecord>>;
    async fn reward(&self, id: &str) -> StoreResult<Option<RewardRecord>>;
    /// Redeem under the member's and the reward's locks, in one transaction: the decision, the ledger
    /// entries, the stock and the record, or nothing. Idempotent on `(member, key)`.
    async fn redeem(
        &self,
        member: MemberId,
        reward_id: &str,
        key: &str,
        op: RedeemOp,
        at: DateTime<Utc>,
    ) -> StoreResult<RedeemStored>;
    /// Cancel a redemption in one transaction: points back on the ledger, stock back, record updated.
    async fn cancel_redemption(&self, member: MemberId, redemption_id: i64, op: CancelOp) -> StoreResult<RedeemStored>;
    /// A member's redemptions, newest first.
    async fn member_redemptions(&self, member: MemberId) -> StoreResult<Vec<Redemption>>;
}

pub use crate::loyalty::tiers::CardTerm;

/// A purchased card term as stored: its id, who sold it and the shop's payment reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CardRecord {
    pub card_id: i64,
    pub member_id: MemberId,
    /// The shop's reference of the payment (the card is paid at the shop's checkout).
    pub payment_ref: Option<String>,
    /// The API key (or `cli`) that recorded the purchase.
    pub bought_by: String,
    /// Plan, price paid, validity and the benefits as sold.
    #[schema(value_type = Object)]
    pub term: CardTerm,
}

/// A card purchase to record, idempotent on `(member_id, key)`.
#[derive(Debug, Clone)]
pub struct CardPurchase {
    pub member_id: MemberId,
    pub plan: String,
    pub key: String,
    pub payment_ref: Option<String>,
    pub actor: Actor,
}

/// The pure decision of a purchase: the member's stored terms in, the new term (or why not) out.
pub type CardOp = Box<dyn FnOnce(&[CardTerm]) -> Result<CardTerm, crate::loyalty::tiers::TierError> + Send>;

/// What a purchase came to.
#[derive(Debug, Clone)]
pub enum CardStored {
    Bought(CardRecord),
    /// The same key, plan and payment reference again: the card bought the first time.
    Replayed(CardRecord),
    /// The key was used for a different purchase.
    KeyReused(CardRecord),
    Refused(crate::loyalty::tiers::TierError),
}

/// Paid membership cards (`store/cards.rs`).
#[async_trait]
pub trait CardStore {
    /// Record a purchase under the member's card lock, with its audit entry, in one transaction.
    async fn buy_card(&self, purchase: &CardPurchase, op: CardOp) -> StoreResult<CardStored>;
    /// A member's card terms, oldest first.
    async fn member_cards(&self, member: MemberId) -> StoreResult<Vec<CardRecord>>;
    /// The card terms of several members (for earning), oldest first per member.
    async fn cards_of_members(
        &self,
        members: &[MemberId],
    ) -> StoreResult<std::collections::HashMap<MemberId, Vec<CardTerm>>>;
}

pub use crate::loyalty::risk::{ClearRefusal, Crossing, RiskFlag};

/// A stored risk flag: its id (per member) and the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskFlagRecord {
    pub id: i64,
    pub member_id: MemberId,
    pub flag: RiskFlag,
}

/// The pure decision of clearing a flag: the stored flag in, the cleared flag (or a refusal) out. Returning
/// a flag that was already cleared, unchanged, is a retry: nothing is written.
pub type ClearOp = Box<dyn FnOnce(RiskFlag) -> Result<RiskFlag, ClearRefusal> + Send>;

/// What clearing a flag came to.
#[derive(Debug, Clone)]
pub enum ClearStored {
    Cleared(RiskFlagRecord),
    Refused(ClearRefusal),
    NoSuchFlag,
}

/// Risk control (`store/risk.rs`): the policy and the flags. Flags are raised by `ledger_apply` and `redeem`
/// in their own transactions.
#[async_trait]
pub trait RiskStore {
    /// Store the risk policy (JSON) under `key` in the settings. Audited in the same transaction.
    async fn put_risk_policy(&self, key: &str, body: &str, actor: &Actor) -> StoreResult<()>;
    /// A member's flags, newest first.
    async fn risk_flags(&self, member: MemberId) -> StoreResult<Vec<RiskFlagRecord>>;
    /// Clear a flag under the member's ledger lock (so it serializes with redemptions). Audited.
    async fn clear_risk_flag(
        &self,
        member: MemberId,
        flag_id: i64,
        op: ClearOp,
        actor: &Actor,
    ) -> StoreResult<ClearStored>;
}

/// A stored webhook endpoint. The secret is sealed; only the app can open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: i64,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// A new endpoint in stored form, with the caller's idempotency key and the digest of what was asked.
#[derive(Debug, Clone)]
pub struct WebhookWrite {
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub idem_key: String,
    pub request_digest: Vec<u8>,
}

/// What storing an endpoint did.
#[derive(Debug, Clone)]
pub enum WebhookStored {
    Created(WebhookRecord),
    /// The key was used before for the same request: the endpoint it created.
    Replayed(WebhookRecord),
    /// The key was used before for a different request.
    KeyReused,
}

/// An event as the outbox keeps it; `seq` orders the outbox (commit order, so a poller never skips one).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub member_id: Option<MemberId>,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Where one event stands with one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet acknowledged; retried at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up after the last allowed attempt.
    Dead,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryRecord {
    pub endpoint_id: i64,
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last attempt, if it answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery claimed for one attempt: the endpoint, its sealed secret and the event.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub endpoint_id: i64,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub event: OutboxEvent,
    /// Attempts including this one.
    pub attempts: i32,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub at: DateTime<Utc>,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// `Delivered`, `Pending` (retry at `retry_at`) or `Dead`.
    pub state: DeliveryState,
    pub retry_at: Option<DateTime<Utc>>,
}

/// The outbox and webhook endpoints (`store/outbox.rs`).
#[async_trait]
pub trait OutboxStore {
    /// Put events in the outbox in their own transaction (producers with a cause in the store write them in
    /// the cause's transaction instead). An id already stored is ignored. Returns how many were new.
    async fn emit_events(&self, events: &[crate::notify::Notice], at: DateTime<Utc>) -> StoreResult<u64>;
    /// Events after `seq`, oldest first, optionally of one type.
    async fn outbox_events(&self, after: i64, event_type: Option<&str>, limit: i64) -> StoreResult<Vec<OutboxEvent>>;
    /// Register an endpoint, idempotent on `idem_key`; audited.
    async fn insert_webhook(&self, w: &WebhookWrite, actor: &Actor) -> StoreResult<WebhookStored>;
    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>>;
    async fn webhook(&self, id: i64) -> StoreResult<Option<WebhookRecord>>;
    /// Stop delivering to an endpoint (its pending deliveries stay, unsent); audited. `None` if unknown.
    async fn deactivate_webhook(&self, id: i64, actor: &Actor) -> StoreResult<Option<WebhookRecord>>;
    /// An endpoint's deliveries after `seq`, oldest first, optionally in one state.
    async fn webhook_deliveries(
        &self,
        endpoint: i64,
        after: i64,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Claim up to `limit` deliveries due at `now` for one attempt each: their attempt count goes up and
    /// they are not due again before `lease_until` (so a crashed attempt is retried, and two workers never
    /// send the same attempt).
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Record how an attempt ended.
    async fn finish_delivery(&self, endpoint: i64, seq: i64, result: &AttemptResult) -> StoreResult<()>;
    /// Make a `dead` delivery pending again, due at `actor.at`, with a fresh count of attempts; audited.
    /// False (and nothing written) unless it was dead.
    async fn retry_delivery(&self, endpoint: i64, seq: i64, actor: &Actor) -> StoreResult<bool>;
    /// Deliveries not done yet, per endpoint with any, for monitoring. Reads only the pending and dead
    /// parts of the `(state, next_attempt_at)` index, never the delivered history, so a scrape stays cheap.
    async fn delivery_backlog(&self) -> StoreResult<Vec<DeliveryBacklog>>;
}

/// One endpoint's deliveries not done yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryBacklog {
    pub endpoint_id: i64,
    pub pending: i64,
    pub dead: i64,
    /// When the earliest pending delivery is (or was) due; how far `now` is past it is the delivery lag.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

pub use crate::loyalty::coupons::{Coupon, CouponTemplate, RedeemError as CouponRefusal, RefundExtent};

/// A coupon template with how many coupons of it were issued (the total quantity is enforced on this).
#[derive(Debug, Clone, PartialEq)]
pub struct CouponTemplateRecord {
    pub template: CouponTemplate,
    pub issued: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A recipient an issue request refused, by position in the request, with a machine-readable code
/// (`limit_reached`, `sold_out`, `window_closed`, `no_such_member`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssueRefusal {
    pub index: usize,
    pub member_id: MemberId,
    pub code: String,
    pub message: String,
}

/// What one issue request did; stored with its key so a retry answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueResult {
    /// The coupons issued, in request order.
    pub coupons: Vec<Coupon>,
    pub refused: Vec<IssueRefusal>,
}

/// What storing an issue request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueStored {
    Created(IssueResult),
    /// The key was used before with the same request: its original result, nothing new written.
    Replayed(IssueResult),
    /// The key was used before with another request.
    KeyReused,
    NoSuchTemplate,
}

/// What one round of the coupon sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CouponSweep {
    /// Coupons recorded as expired (each with a `coupon.expired` notice).
    pub expired: u64,
    /// Coupons whose members were reminded (`coupon.expiring`).
    pub reminded: u64,
    /// A batch was full: there may be more to do.
    pub more: bool,
}

/// A pure coupon transition (redeem, void), run under the coupon's lock on its current record.
pub type CouponOp = Box<dyn FnOnce(Coupon) -> Result<Coupon, CouponRefusal> + Send>;

/// What a refund does to a coupon redeemed on its order, given how much of the order is refunded.
pub type RefundCouponOp = Box<dyn Fn(&Coupon, RefundExtent) -> Coupon + Send + Sync>;

/// Coupon templates and issued coupons (`store/coupons.rs`).
#[async_trait]
pub trait CouponStore {
    /// Create or replace a template (validated before); the issued count is kept. Audited.
    async fn put_coupon_template(&self, template: &CouponTemplate, actor: &Actor) -> StoreResult<CouponTemplateRecord>;
    async fn coupon_templates(&self) -> StoreResult<Vec<CouponTemplateRecord>>;
    async fn coupon_template(&self, id: &str) -> StoreResult<Option<CouponTemplateRecord>>;
    /// Issue one coupon of the template to each member, under the template's lock in one transaction: the
    /// per-member limit and the total quantity are judged on what is stored, codes colliding with stored
    /// ones are redrawn. Idempotent on `(template, key)`; `digest` tells a retry from a reuse of the key.
    /// Audited when an actor is given.
    async fn issue_coupons(
        &self,
        template_id: &str,
        members: &[MemberId],
        key: &str,
        digest: &str,
        at: DateTime<Utc>,
        actor: Option<&Actor>,
    ) -> StoreResult<IssueStored>;
    async fn coupon(&self, code: &str) -> StoreResult<Option<Coupon>>;
    /// A member's coupons, newest first.
    async fn member_coupons(&self, member: MemberId) -> StoreResult<Vec<Coupon>>;
    /// Apply a transition to a coupon under its lock and store the result; `None` if there is no such
    /// coupon. Audited when an actor is given.
    async fn update_coupon(
        &self,
        code: &str,
        op: CouponOp,
        at: DateTime<Utc>,
        actor: Option<&Actor>,
    ) -> StoreResult<Option<Result<Coupon, CouponRefusal>>>;
    /// After a refund of `order_id`: judge how much of the order is refunded (every line's units counted
    /// over all its refunds) and apply `op` to each coupon redeemed on it; returns the coupons changed.
    async fn refund_coupons(&self, order_id: i64, op: RefundCouponOp, at: DateTime<Utc>) -> StoreResult<Vec<Coupon>>;
    /// One round of the coupon sweep as of `now`, in one transaction: up to `limit` unused coupons whose
    /// window has closed become `expired` (each under its lock, judged by the pure `expire`), and up to
    /// `limit` unused coupons whose window closes by `remind_until` and whose members were not reminded
    /// yet are reminded, once. Notices go to the outbox in the same transaction, so a crash loses none
    /// and a rerun repeats none.
    async fn sweep_coupons(
        &self,
        now: DateTime<Utc>,
        remind_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<CouponSweep>;
}

// ---------------------------------------------------------------------------------------------------------
// Behaviour analytics (`store/analytics.rs`)
// ---------------------------------------------------------------------------------------------------------

/// An active member as the analysis sees it (merged members are folded into their survivor by the merge).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberBase {
    pub member_id: MemberId,
    pub registered_at: DateTime<Utc>,
}

/// Rows of one kind as a store hands them to an analysis run: in runs of one member's rows, each run's member
/// written once. Tens of millions of grouped rows at scale would otherwise carry the same member id each.
#[derive(Debug, Clone, PartialEq)]
pub struct ByMember<T> {
    runs: Vec<(MemberId, u32)>,
    rows: Vec<T>,
}

impl<T> Default for ByMember<T> {
    fn default() -> Self {
        Self { runs: Vec::new(), rows: Vec::new() }
    }
}

impl<T> ByMember<T> {
    /// Append a row of `member`'s; it joins the last run when that run is the same member's.
    pub fn push(&mut self, member: MemberId, row: T) {
        count_run(&mut self.runs, member);
        self.rows.push(row);
    }

    /// The last row pushed, to fold the next one into (a store summing rows by member and day).
    pub fn last_mut(&mut self) -> Option<&mut T> {
        self.rows.last_mut()
    }

    /// Each run: a member and that member's consecutive rows.
    pub fn runs(&self) -> impl Iterator<Item = (MemberId, &[T])> + '_ {
        let mut start = 0usize;
        self.runs.iter().map(move |&(member, n)| {
            let end = start + n as usize;
            let rows = &self.rows[start..end];
            start = end;
            (member, rows)
        })
    }

    /// Every row with its member, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = (MemberId, &T)> + '_ {
        self.runs().flat_map(|(member, rows)| rows.iter().map(move |r| (member, r)))
    }

    /// The runs and the rows, for grouping without a copy.
    pub fn into_parts(self) -> (Vec<(MemberId, u32)>, Vec<T>) {
        (self.runs, self.rows)
    }

    /// Give back what pushing row by row over-allocated: a run keeps its rows to the end.
    pub fn shrink_to_fit(&mut self) {
        self.runs.shrink_to_fit();
        self.rows.shrink_to_fit();
    }
}

/// Count one more row of `member` in `runs`: the last run's when it is the same member's, else a new run's.
/// (Also for rows collected apart from their runs, as SQLite's order lines are, in place.)
fn count_run(runs: &mut Vec<(MemberId, u32)>, member: MemberId) {
    match runs.last_mut() {
        Some((m, n)) if *m == member && *n < u32::MAX => *n += 1,
        _ => runs.push((member, 1)),
    }
}

impl<T> FromIterator<(MemberId, T)> for ByMember<T> {
    fn from_iter<I: IntoIterator<Item = (MemberId, T)>>(iter: I) -> Self {
        let mut out = Self::default();
        for (member, row) in iter {
            out.push(member, row);
        }
        out
    }
}

/// A member's paid orders of one UTC day, summed in the store (`GROUP BY member, day`); the member is its
/// run's ([`ByMember`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseDay {
    pub day: NaiveDate,
    pub orders: u32,
    /// Orders with a coupon or a discount.
    pub promo_orders: u32,
    /// Order totals in fen.
    pub amount: i64,
}

/// A member's refunds of one UTC day, in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundDay {
    pub member_id: MemberId,
    pub day: NaiveDate,
    pub refunds: i64,
    pub amount: i64,
}

/// A member's events of one type: how many in all, how many since the window start, and the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTally {
    pub member_id: MemberId,
    pub event_type: String,
    pub total: i64,
    pub recent: i64,
    pub last_at: DateTime<Utc>,
}

/// A merchandise line of a paid order (preferences, purchase cycles, basket rules); the member is its run's
/// ([`ByMember`]) and the SKU an index into [`LineFacts::skus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineFact {
    pub order_id: i64,
    pub unit_price: i64,
    pub amount: i64,
    pub day: NaiveDate,
    /// Position of the line's SKU in [`LineFacts::skus`]: tens of millions of lines name a few thousand SKUs.
    pub sku: u32,
}

/// The order lines of a window, by member, order and line, and the SKUs they name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineFacts {
    pub lines: ByMember<LineFact>,
    pub skus: Vec<SkuFacts>,
}

/// A SKU as the analytics see it: its category path and brand, when the catalogue has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuFacts {
    pub sku: String,
    pub category: Option<String>,
    pub brand: Option<String>,
}

/// A member's points movements of one UTC day: points earned (positive entries) and spent (redeemed); the
/// member is its run's ([`ByMember`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsDay {
    pub day: NaiveDate,
    pub earned: i64,
    pub spent: i64,
}

/// A member's engagement events of one type on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementDay {
    pub member_id: MemberId,
    pub day: NaiveDate,
    /// Shared by every row of the type (millions of rows, five types).
    pub event_type: std::sync::Arc<str>,
    pub count: i64,
}

/// One behaviour event, for funnels and paths.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub member_id: MemberId,
    pub at: DateTime<Utc>,
    /// Texts shared by every row that carries them: millions of events name a few types, a few thousand
    /// SKUs, and a session per visit.
    pub event_type: std::sync::Arc<str>,
    pub session_id: Option<std::sync::Arc<str>>,
    pub sku: Option<std::sync::Arc<str>>,
}

/// An analysis run: `running` until its results commit in one transaction (`done`), or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsRun {
    pub run_id: i64,
    pub as_of: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}

/// A member's results of one run: the columns segment queries filter on, and the whole explained result
/// (read back as a `Value`; written as text, see [`MemberAnalyticsWrite`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAnalyticsRow<B = serde_json::Value> {
    pub member_id: MemberId,
    pub rfm_segment: Option<String>,
    pub stage: String,
    pub clv_fen: Option<i64>,
    pub prob_alive: Option<f64>,
    pub churn_risk: Option<f64>,
    pub cluster: Option<i32>,
    pub next_purchase: Option<NaiveDate>,
    pub body: B,
}

/// A member's row as a run writes it: the body is JSON text already, assembled section by section as the
/// stages finish, because a million members' bodies held as `serde_json::Value` trees cost several times
/// their text.
pub type MemberAnalyticsWrite = MemberAnalyticsRow<Box<serde_json::value::RawValue>>;

impl<B> MemberAnalyticsRow<B> {
    /// The same columns with another body.
    pub fn with_body<C>(self, body: C) -> MemberAnalyticsRow<C> {
        let Self { member_id, rfm_segment, stage, clv_fen, prob_alive, churn_risk, cluster, next_purchase, body: _ } =
            self;
        MemberAnalyticsRow {
            member_id,
            rfm_segment,
            stage,
            clv_fen,
            prob_alive,
            churn_risk,
            cluster,
            next_purchase,
            body,
        }
    }
}

/// A run's member rows, handed to the store a chunk at a time: a million members' bodies are gigabytes of
/// JSON, so the analysis keeps them on disk and the store writes each chunk as it is read back.
pub trait MemberRows: Send + std::fmt::Debug {
    /// Up to `max` more rows, in member order; empty once every row has been handed over.
    fn next_chunk(&mut self, max: usize) -> StoreResult<Vec<MemberAnalyticsWrite>>;
    /// How many rows are still to come.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows already in memory (small runs, tests).
impl MemberRows for std::vec::IntoIter<MemberAnalyticsWrite> {
    fn next_chunk(&mut self, max: usize) -> StoreResult<Vec<MemberAnalyticsWrite>> {
        Ok(self.by_ref().take(max).collect())
    }

    fn len(&self) -> usize {
        ExactSizeIterator::len(self)
    }
}

/// What the next run needs of a member's previous results to log changes: the stage and the RFM part.
#[derive(Debug, Clone)]
pub struct PreviousMember {
    pub member_id: MemberId,
    pub stage: String,
    /// The `rfm` section of the body as JSON text, if the member had one: a million members' sections as
    /// parsed trees took gigabytes, and the analysis parses each into its own type anyway.
    pub rfm: Option<Box<serde_json::value::RawValue>>,
}

/// A member's segment or stage change between two runs, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsChange {
    pub run_id: i64,
    pub member_id: MemberId,
    /// `rfm` or `lifecycle`.
    pub model: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

/// A member's tag with its decaying weight (the analytics kernel's `MemberTag` in stored form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberTagRow {
    pub member_id: MemberId,
    pub tag: String,
    pub category: String,
    /// `rule`, `model`, `keyword` or `manual`.
    pub source: String,
    /// The weight as of the run that wrote it.
    pub weight: f64,
    /// The weight when evidence last supported the tag; decay starts from here.
    pub support_weight: f64,
    pub last_supported_at: DateTime<Utc>,
    pub first_tagged_at: DateTime<Utc>,
    /// Why, from the last supporting evidence.
    pub reason: String,
}

/// Everything a finished run writes, committed in one transaction.
#[derive(Debug)]
pub struct AnalyticsOutput {
    pub summary: serde_json::Value,
    /// Aggregate results by model name.
    pub results: Vec<(String, serde_json::Value)>,
    /// One row per member, read as they are written.
    pub members: Box<dyn MemberRows>,
    pub changes: Vec<AnalyticsChange>,
    /// The new set of computed tags, plus the manual tags still standing with their (decayed) weights;
    /// manual tags are updated in place, never re-created.
    pub tags: Vec<MemberTagRow>,
    /// Manual tags whose weight decayed below the floor (only under a configured manual half-life).
    pub dropped_manual_tags: Vec<(MemberId, String)>,
    /// Per-member rows of runs older than the newest `keep_runs` are deleted (aggregates are kept).
    pub keep_runs: i64,
    /// Outbox events (KPI alerts), written in the same transaction.
    pub notices: Vec<crate::notify::Notice>,
}

/// Behaviour analytics: aggregated reads over orders, events and the ledger (windows are `[since, until)`),
/// and versioned results.
#[async_trait]
pub trait AnalyticsStore {
    /// Active members registered before `until`.
    async fn analytics_members(&self, until: DateTime<Utc>) -> StoreResult<Vec<MemberBase>>;
    /// Paid (not cancelled) orders before `until`, per member and UTC day, ordered by member and day.
    async fn purchase_days(&self, until: DateTime<Utc>) -> StoreResult<ByMember<PurchaseDay>>;
    /// Refunds before `until`, per member and UTC day.
    async fn refund_days(&self, until: DateTime<Utc>) -> StoreResult<Vec<RefundDay>>;
    /// Member events before `until` per member and type; `recent` counts those at or after `since`.
    async fn event_tallies(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EventTally>>;
    /// Merchandise lines of paid orders placed in `[since, until)`, ordered by member and order.
    async fn line_facts(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<LineFacts>;
    /// Points earned and spent per member and UTC day before `until`.
    async fn points_days(&self, until: DateTime<Utc>) -> StoreResult<ByMember<PointsDay>>;
    /// Members' events in `[since, until)`, ordered by member and time.
    async fn event_rows(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EventRow>>;
    /// Engagement events (views, carts, check-ins, campaign clicks) per member, UTC day and type in
    /// `[since, until)`, ordered by member and day.
    async fn engagement_days(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EngagementDay>>;
    /// Free text members wrote (`text` or `content` of `custom.review` and `custom.note` events) in
    /// `[since, until)`, for keyword tags: member, time, text.
    async fn member_texts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(MemberId, DateTime<Utc>, String)>>;
    /// Distinct active members (an order or an event) per UTC day in `[since, until)`.
    async fn active_members_by_day(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(NaiveDate, i64)>>;

    /// Open a run; runs left `running` by a crash are marked `failed` first.
    async fn begin_analytics_run(
        &self,
        as_of: NaiveDate,
        params: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> StoreResult<AnalyticsRun>;
    /// Commit a run's results and mark it `done`, all in one transaction.
    async fn finish_analytics_run(&self, run_id: i64, out: AnalyticsOutput, at: DateTime<Utc>) -> StoreResult<()>;
    async fn fail_analytics_run(&self, run_id: i64, error: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Runs, newest first.
    async fn analytics_runs(&self, limit: i64) -> StoreResult<Vec<AnalyticsRun>>;
    /// The newest `done` run.
    async fn latest_analytics_run(&self) -> StoreResult<Option<AnalyticsRun>>;
    async fn analytics_result(&self, run_id: i64, model: &str) -> StoreResult<Option<serde_json::Value>>;
    /// Every member's row of a run.
    async fn member_analytics_rows(&self, run_id: i64) -> StoreResult<Vec<MemberAnalyticsRow>>;
    /// Every member's stage and RFM result of a run (what the next run compares with), by member id.
    async fn previous_members(&self, run_id: i64) -> StoreResult<Vec<PreviousMember>>;
    async fn member_analytics(&self, run_id: i64, member: MemberId) -> StoreResult<Option<MemberAnalyticsRow>>;
    /// A member's logged changes, newest first.
    async fn member_analytics_changes(&self, member: MemberId, limit: i64) -> StoreResult<Vec<AnalyticsChange>>;
    /// Current tags of one member (`Some`) or of every member (`None`), by weight.
    async fn member_tags(&self, member: Option<MemberId>) -> StoreResult<Vec<MemberTagRow>>;
    /// One run, whatever its status.
    async fn analytics_run(&self, run_id: i64) -> StoreResult<Option<AnalyticsRun>>;
    /// Set an operator's tag on a member (source `manual`): a new tag, or a re-applied one keeping the time
    /// it was first set. Returns the stored tag.
    async fn put_manual_tag(&self, tag: &MemberTagRow) -> StoreResult<MemberTagRow>;
    /// Remove a manual tag; false when the member had no such manual tag.
    async fn delete_manual_tag(&self, member: MemberId, tag: &str) -> StoreResult<bool>;
}
