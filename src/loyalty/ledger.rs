//! The points ledger kernel: one member's points and growth value (成长值) as an append-only list of
//! entries. Pure: no I/O, no clock (every step takes its time), no floats. The store persists exactly the
//! entries the operations return and rebuilds the state with [`Ledger::apply`]; `huiyuan loyalty verify`
//! runs [`verify`] over the stored entries.
//!
//! # Design
//!
//! * **Balances are sums.** Every entry lands in one bucket of its wallet by its `state`: `Pending`,
//!   `Available` or `Voided` (recorded but never counted). A bucket's balance is the sum of its entries.
//! * **State transitions are entries.** Nothing is ever edited. Maturing a pending lot writes a pair of
//!   `Earn` entries on the lot: `−p` in `Pending` and `+p` in `Available` (keys `{lot}#mature#0/1`).
//!   Points reversed while still pending are a `Reverse` entry in `Pending` state: they leave the pending
//!   bucket and never become available (voided). A shortfall that the [`NegativePolicy::ClampAtZero`]
//!   policy does not claw back is a `Voided` entry, so what was owed stays on record without counting.
//! * **Lots.** An entry whose `lot` is its own key opens a lot (earns and positive adjustments). Every
//!   other entry naming a lot moves that lot's pending or available remainder; a lot never goes below zero.
//!   Spending (redeem, negative adjust, clawback beyond the refunded line's own lots) takes the
//!   earliest-expiring available lots first, ties by earliest earned; lots that never expire come last.
//! * **Idempotency.** Each operation has a key (the caller's, or derived from the lot for maturing and
//!   expiry). Its entries are keyed `{op}#{n}` and carry the operation key and the canonical request, so a
//!   retry with the same key returns the original entries and the same key with a different request is a
//!   [`LedgerError::KeyConflict`] — even after a restart, since both live in the stored entries. Caller keys
//!   may not contain `#`, so they never collide with entry keys or derived keys. An operation that has
//!   nothing to write (a refund of a line that earned nothing) leaves no record; its retry again writes
//!   nothing, so it is idempotent all the same.
//! * **Debt.** Under [`NegativePolicy::AllowNegativeBlockRedeem`] a clawback that finds nothing left to
//!   take writes an `Available` entry without a lot: the balance goes negative and redemptions are refused
//!   until it is positive again. Debt is not netted against later lots (each lot keeps its own expiry), so
//!   the balance recovers as the member earns.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::commerce::order::MAX_AMOUNT;
use crate::error::Invalid;

#[cfg(test)]
mod tests;

/// The two wallets of a member: points are spent, growth value only ever accrues (and is reversed on refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wallet {
    Points,
    Growth,
}

/// Why an entry exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Earn,
    Redeem,
    Expire,
    Adjust,
    Reverse,
    /// Moved between two members when one is merged into the other (see [`merge`]): the merged member's
    /// lots close and the survivor's open with the same source, remainder and expiry.
    Transfer,
}

/// Which bucket of its wallet an entry counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Not spendable before `available_at` (the end of the order's return window).
    Pending {
        available_at: DateTime<Utc>,
    },
    Available,
    /// Recorded, never counted (a shortfall not clawed back).
    Voided,
}

/// What caused an entry, so a member's history can answer "why".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    /// An order line: these points wait for the return window and are reversed by refunds of the line.
    OrderLine {
        order_id: i64,
        line_no: i32,
    },
    /// A behaviour rule (check-in, review, …) at a rule-set version.
    Rule {
        rule_id: String,
        version: i64,
    },
    Reward {
        reward_id: String,
    },
    Campaign {
        campaign_id: String,
    },
    Operator {
        id: String,
        reason: String,
    },
    /// The other member of a merge, on entries that move debt between the two ledgers.
    Merge {
        member_id: i64,
    },
}

/// A lot is named by the key of the entry that opened it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LotId(pub String);

/// One append-only ledger line; the store writes these and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique forever: `{op}#{n}`.
    pub key: String,
    /// The idempotency key of the operation that wrote this entry (shared by its entries).
    pub op: String,
    /// The operation's canonical request (JSON), to tell a retry from a conflicting reuse of the key.
    pub request: String,
    pub wallet: Wallet,
    /// Signed: credits positive, debits negative.
    pub amount: i64,
    pub kind: Kind,
    pub state: State,
    pub source: Source,
    pub at: DateTime<Utc>,
    /// The lot this entry opens (its own key) or moves; `None` for debt and voided shortfalls.
    pub lot: Option<LotId>,
    /// Set on the entry that opens a lot.
    pub expires_at: Option<DateTime<Utc>>,
}

/// When earned points expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// N calendar months after earning (the day is clamped to the month's end).
    RollingMonths(u32),
    /// At the first instant of the next year in the business time zone.
    EndOfYear,
    Never,
}

impl Expiry {
    /// The first instant at which points earned at `at` are no longer valid.
    pub fn expires_at(self, at: DateTime<Utc>, tz: chrono_tz::Tz) -> Result<Option<DateTime<Utc>>, Invalid> {
        let out_of_range = || Invalid::new("out_of_range", "at", "the expiry date is out of range");
        match self {
            Expiry::Never => Ok(None),
            Expiry::RollingMonths(n) => at.checked_add_months(Months::new(n)).map(Some).ok_or_else(out_of_range),
            Expiry::EndOfYear => {
                let year = at.with_timezone(&tz).year();
                let next = year.checked_add(1).ok_or_else(out_of_range)?;
                let local = tz.with_ymd_and_hms(next, 1, 1, 0, 0, 0).earliest().ok_or_else(out_of_range)?;
                Ok(Some(local.with_timezone(&Utc)))
            }
        }
    }
}

/// What happens when a clawback (refund or negative adjustment) finds the points already spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NegativePolicy {
    /// Claw back in full: the balance may go negative (a lot-less `Available` entry) and redemptions are
    /// refused until it is positive again. The brand loses nothing.
    #[default]
    AllowNegativeBlockRedeem,
    /// Claw back only what is available; the rest is recorded as a `Voided` entry (the shortfall) and never
    /// counts. The balance never goes negative; the brand absorbs the shortfall.
    ClampAtZero,
}

/// The program's ledger settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub expiry: Expiry,
    /// The business time zone (for end-of-year expiry).
    pub tz: chrono_tz::Tz,
    /// How long order points stay pending; zero or less makes them available at once.
    pub return_window: Duration,
    pub negative: NegativePolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            expiry: Expiry::RollingMonths(12),
            tz: chrono_tz::Asia::Shanghai,
            return_window: Duration::days(7),
            negative: NegativePolicy::default(),
        }
    }
}

/// One refunded order line: cumulative quantities, so a retry or a late duplicate never reverses twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundedLine {
    pub line_no: i32,
    /// Units of the line refunded so far, this refund included.
    pub refunded_quantity: i64,
    /// Units the line was bought with.
    pub line_quantity: i64,
}

/// The canonical form of an operation, stored (as JSON) on its entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Earn {
        wallet: Wallet,
        amount: i64,
        source: Source,
        at: DateTime<Utc>,
    },
    Redeem {
        amount: i64,
        source: Source,
        at: DateTime<Utc>,
    },
    Adjust {
        wallet: Wallet,
        amount: i64,
        operator: String,
        reason: String,
        at: DateTime<Utc>,
    },
    Reverse {
        order_id: i64,
        lines: Vec<RefundedLine>,
        at: DateTime<Utc>,
    },
    Mature {
        lot: LotId,
    },
    Expire {
        lot: LotId,
    },
    /// The merged member's side of a merge.
    MergeOut {
        into_member: i64,
        at: DateTime<Utc>,
    },
    /// The survivor's side of a merge.
    MergeIn {
        from_member: i64,
        at: DateTime<Utc>,
    },
}

/// What an operation wrote (or, on a retry, had written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub entries: Vec<Entry>,
    /// True when the key had been applied before and nothing new was written.
    pub replayed: bool,
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("insufficient points: {available} available, {requested} requested")]
    Insufficient { available: i64, requested: i64 },
    #[error("redemptions are blocked while the balance is negative ({available})")]
    Blocked { available: i64 },
    #[error("idempotency key `{key}` was used for a different request")]
    KeyConflict { key: String },
    #[error("entry `{key}` is already in the ledger")]
    DuplicateEntry { key: String },
    #[error("entry `{key}` names unknown lot `{lot}`")]
    UnknownLot { key: String, lot: String },
    #[error("request could not be encoded: {0}")]
    Encode(String),
}

/// A lot's standing: what it was opened with and what remains in each bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub id: LotId,
    pub wallet: Wallet,
    pub source: Source,
    pub earned: i64,
    pub earned_at: DateTime<Utc>,
    pub available_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub pending: i64,
    pub available: i64,
}

/// A member's balances, each a sum of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    /// Spendable points (negative only under debt).
    pub available: i64,
    /// Points waiting for their return window.
    pub pending: i64,
    /// Available points in lots expiring before `now + within`.
    pub expiring: i64,
    /// Growth value that counts (available).
    pub growth: i64,
    pub growth_pending: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct LineTotals {
    earned: i64,
    reversed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OpRecord {
    request: String,
    entries: Vec<usize>,
}

/// One member's ledger state, rebuilt from entries. Operations append entries (folding them in as they
/// go, exactly as [`Ledger::apply`] would) and return them for the store to write. If the store fails to
/// write them it must drop this value and rebuild from what is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    config: Config,
    entries: Vec<Entry>,
    ops: HashMap<String, OpRecord>,
    keys: HashSet<String>,
    lots: Vec<Lot>,
    lot_index: HashMap<LotId, usize>,
    lines: HashMap<(i64, i32, Wallet), LineTotals>,
}

/// The entries one operation is writing.
struct Batch {
    op: String,
    request: String,
    entries: Vec<Entry>,
}

fn validate_key(key: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > 200 || key.contains('#') {
        return Err(Invalid::new("invalid_key", "idempotency_key", "an idempotency key is 1 to 200 bytes without `#`"));
    }
    Ok(())
}

fn validate_amount(amount: i64, field: &str) -> Result<(), Invalid> {
    if !(1..=MAX_AMOUNT).contains(&amount) {
        return Err(Invalid::new("out_of_range", field, format!("`{field}` must be between 1 and {MAX_AMOUNT}")));
    }
    Ok(())
}

/// Spending order: earliest expiry first, never-expiring last, ties by earliest earned then creation.
fn spend_order(l: &Lot, seq: usize) -> (bool, Option<DateTime<Utc>>, DateTime<Utc>, usize) {
    (l.expires_at.is_none(), l.expires_at, l.earned_at, seq)
}

impl Ledger {
    /// An empty ledger.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            entries: Vec::new(),
            ops: HashMap::new(),
            keys: HashSet::new(),
            lots: Vec::new(),
            lot_index: HashMap::new(),
            lines: HashMap::new(),
        }
    }

    /// Rebuild a ledger from stored entries (what the store does on start).
    pub fn from_entries(config: Config, entries: &[Entry]) -> Result<Self, LedgerError> {
        let mut l = Self::new(config);
        l.apply(entries)?;
        Ok(l)
    }

    /// Fold stored entries into the state. Refuses an entry key seen before and a lot never opened;
    /// every other invariant is [`verify`]'s business.
    pub fn apply(&mut self, entries: &[Entry]) -> Result<(), LedgerError> {
        entries.iter().try_for_each(|e| self.fold(e.clone()))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every entry, in the order written.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether an operation with this key has written entries.
    pub fn has_op(&self, key: &str) -> bool {
        self.ops.contains_key(key)
    }

    /// Every lot, in the order opened.
    pub fn lots(&self) -> &[Lot] {
        &self.lots
    }

    /// Balances at `now`, counting as "expiring" the available points whose lot expires before `now + within`.
    pub fn balances(&self, now: DateTime<Utc>, within: Duration) -> Balances {
        let mut b = Balances::default();
        for e in &self.entries {
            let slot = match (e.wallet, e.state) {
                (Wallet::Points, State::Available) => &mut b.available,
                (Wallet::Points, State::Pending { .. }) => &mut b.pending,
                (Wallet::Growth, State::Available) => &mut b.growth,
                (Wallet::Growth, State::Pending { .. }) => &mut b.growth_pending,
                (_, State::Voided) => continue,
            };
            *slot += e.amount;
        }
        let horizon = now + within;
        b.expiring = self
            .lots
            .iter()
            .filter(|l| l.wallet == Wallet::Points && l.expires_at.is_some_and(|x| x <= horizon))
            .map(|l| l.available)
            .sum();
        b
    }

    fn available(&self, wallet: Wallet) -> i64 {
        self.entries.iter().filter(|e| e.wallet == wallet && e.state == State::Available).map(|e| e.amount).sum()
    }

    /// Credit points or growth value. Order-line credits stay pending for the return window.
    pub fn earn(
        &mut self,
        key: &str,
        wallet: Wallet,
        amount: i64,
        source: Source,
        at: DateTime<Utc>,
    ) -> Result<Outcome, LedgerError> {
        validate_key(key)?;
        validate_amount(amount, "amount")?;
        let request = Request::Earn { wallet, amount, source: source.clone(), at };
        let mut b = match self.begin(key, &request)? {
            Ok(b) => b,
            Err(done) => return Ok(done),
        };
        let state = match source {
            Source::OrderLine { .. } if self.config.return_window > Duration::zero() => {
                State::Pending { available_at: at + self.config.return_window }
            }
            _ => State::Available,
        };
        self.open_lot(&mut b, wallet, amount, Kind::Earn, state, source, at)?;
        Ok(self.finish(b))
    }

    /// Spend points, earliest-expiring lots first. Refused when the available balance does not cover it.
    pub fn redeem(
        &mut self,
        key: &str,
        amount: i64,
        source: Source,
        at: DateTime<Utc>,
    ) -> Result<Outcome, LedgerError> {
        validate_key(key)?;
        validate_amount(amount, "amount")?;
        let request = Request::Redeem { amount, source: source.clone(), at };
        let mut b = match self.begin(key, &request)? {
            Ok(b) => b,
            Err(done) => return Ok(done),
        };
        let available = self.available(Wallet::Points);
        if available < 0 {
            return Err(LedgerError::Blocked { available });
        }
        if available < amount {
            return Err(LedgerError::Insufficient { available, requested: amount });
        }
        // Lots hold at least the available balance (debt only lowers the balance), so this takes it all.
        let left = self.consume(&mut b, Wallet::Points, amount, Kind::Redeem, &source, at)?;
        debug_assert_eq!(left, 0);
        Ok(self.finish(b))
    }

    /// An operator's correction, positive (opens a lot) or negative (spends lots, then the negative policy).
    pub fn adjust(
        &mut self,
        key: &str,
        wallet: Wallet,
        amount: i64,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Outcome, LedgerError> {
        validate_key(key)?;
        if amount == 0 {
            return Err(Invalid::new("out_of_range", "amount", "an adjustment must not be zero").into());
        }
        validate_amount(amount.checked_abs().unwrap_or(i64::MAX), "amount")?;
        if operator.trim().is_empty() {
            return Err(Invalid::missing("operator").into());
        }
        if reason.trim().is_empty() {
            return Err(Invalid::missing("reason").into());
        }
        let request =
            Request::Adjust { wallet, amount, operator: operator.to_string(), reason: reason.to_string(), at };
        let mut b = match self.begin(key, &request)? {
            Ok(b) => b,
            Err(done) => return Ok(done),
        };
        let source = Source::Operator { id: operator.to_string(), reason: reason.to_string() };
        if amount > 0 {
            self.open_lot(&mut b, wallet, amount, Kind::Adjust, State::Available, source, at)?;
        } else {
            let left = self.consume(&mut b, wallet, -amount, Kind::Adjust, &source, at)?;
            self.shortfall(&mut b, wallet, left, Kind::Adjust, source, at)?;
        }
        Ok(self.finish(b))
    }

    /// Reverse what refunded lines earned, in both wallets, pro rata to the refunded quantity; the last unit
    /// takes the remainder so a fully refunded line gives back exactly what it earned. Taken from the line's
    /// own lots (pending first), then from other available lots, then per the negative policy.
    pub fn reverse_order_lines(
        &mut self,
        key: &str,
        order_id: i64,
        lines: &[RefundedLine],
        at: DateTime<Utc>,
    ) -> Result<Outcome, LedgerError> {
        validate_key(key)?;
        let mut seen = HashSet::new();
        for (i, l) in lines.iter().enumerate() {
            let at_line = |e: Invalid| e.within(&format!("lines[{i}]"));
            if !seen.insert(l.line_no) {
                return Err(at_line(Invalid::new("duplicate_line", "line_no", "a line may appear once")).into());
            }
            if !(1..=MAX_AMOUNT).contains(&l.line_quantity) {
                return Err(at_line(Invalid::new("out_of_range", "line_quantity", "must be positive")).into());
            }
            if !(0..=l.line_quantity).contains(&l.refunded_quantity) {
                return Err(at_line(Invalid::new(
                    "out_of_range",
                    "refunded_quantity",
                    "must be between 0 and line_quantity",
                ))
                .into());
            }
        }
        let request = Request::Reverse { order_id, lines: lines.to_vec(), at };
        let mut b = match self.begin(key, &request)? {
            Ok(b) => b,
            Err(done) => return Ok(done),
        };
        for l in lines {
            for wallet in [Wallet::Points, Wallet::Growth] {
                let totals = self.lines.get(&(order_id, l.line_no, wallet)).cloned().unwrap_or_default();
                let target = if l.refunded_quantity == l.line_quantity {
                    totals.earned
                } else {
                    // i128: earned ≤ 10^13 and quantity ≤ 10^13 would overflow i64.
                    (i128::from(totals.earned) * i128::from(l.refunded_quantity) / i128::from(l.line_quantity)) as i64
                };
                let mut due = target - totals.reversed;
                if due <= 0 {
                    continue;
                }
                let source = Source::OrderLine { order_id, line_no: l.line_no };
                let own: Vec<usize> = (0..self.lots.len())
                    .filter(|&i| self.lots[i].wallet == wallet && self.lots[i].source == source)
                    .collect();
                for &i in &own {
                    let take = self.lots[i].pending.min(due);
                    if take > 0 {
                        let state = State::Pending { available_at: self.lots[i].available_at.unwrap_or(at) };
                        let lot = Some(self.lots[i].id.clone());
                        self.emit(&mut b, wallet, -take, Kind::Reverse, state, source.clone(), at, lot, None)?;
                        due -= take;
                    }
                }
                for &i in &own {
                    let take = self.lots[i].available.min(due);
                    if take > 0 {
                        let lot = Some(self.lots[i].id.clone());
                        self.emit(
                            &mut b,
                            wallet,
                            -take,
                            Kind::Reverse,
                            State::Available,
                            source.clone(),
                            at,
                            lot,
                            None,
                        )?;
                        due -= take;
                    }
                }
                let left = self.consume(&mut b, wallet, due, Kind::Reverse, &source, at)?;
                self.shortfall(&mut b, wallet, left, Kind::Reverse, source, at)?;
            }
        }
        Ok(self.finish(b))
    }

    /// Turn every pending lot whose return window has closed by `now` available. Idempotent: each lot's
    /// maturing has its own derived key, and a matured lot has nothing pending left.
    pub fn mature(&mut self, now: DateTime<Utc>) -> Result<Vec<Entry>, LedgerError> {
        let mut out = Vec::new();
        for i in 0..self.lots.len() {
            let lot = &self.lots[i];
            let Some(available_at) = lot.available_at else { continue };
            if lot.pending <= 0 || available_at > now {
                continue;
            }
            let id = lot.id.clone();
            let mut b = match self.begin(&format!("{}#mature", id.0), &Request::Mature { lot: id.clone() })? {
                Ok(b) => b,
                Err(_) => continue,
            };
            let (wallet, pending, source) = (lot.wallet, lot.pending, lot.source.clone());
            let pend = State::Pending { available_at };
            self.emit(&mut b, wallet, -pending, Kind::Earn, pend, source.clone(), now, Some(id.clone()), None)?;
            self.emit(&mut b, wallet, pending, Kind::Earn, State::Available, source, now, Some(id), None)?;
            out.extend(self.finish(b).entries);
        }
        Ok(out)
    }

    /// Expire what remains of every points lot whose expiry has come by `now`. A lot still pending waits
    /// until it matures. Idempotent: each lot's expiry has its own derived key, and expires the lot to zero.
    pub fn expire_due(&mut self, now: DateTime<Utc>) -> Result<Vec<Entry>, LedgerError> {
        let mut out = Vec::new();
        for i in 0..self.lots.len() {
            let lot = &self.lots[i];
            if lot.wallet != Wallet::Points || lot.pending != 0 || lot.available <= 0 {
                continue;
            }
            if lot.expires_at.is_none_or(|x| x > now) {
                continue;
            }
            let id = lot.id.clone();
            let mut b = match self.begin(&format!("{}#expire", id.0), &Request::Expire { lot: id.clone() })? {
                Ok(b) => b,
                Err(_) => continue,
            };
            let (amount, source) = (lot.available, lot.source.clone());
            self.emit(&mut b, Wallet::Points, -amount, Kind::Expire, State::Available, source, now, Some(id), None)?;
            out.extend(self.finish(b).entries);
        }
        Ok(out)
    }

    /// Start an operation: `Err(outcome)` if the key was applied with the same request (a retry).
    fn begin(&self, op: &str, request: &Request) -> Result<Result<Batch, Outcome>, LedgerError> {
        let json = serde_json::to_string(request).map_err(|e| LedgerError::Encode(e.to_string()))?;
        match self.ops.get(op) {
            Some(rec) if rec.request == json => {
                let entries = rec.entries.iter().map(|&i| self.entries[i].clone()).collect();
                Ok(Err(Outcome { entries, replayed: true }))
            }
            Some(_) => Err(LedgerError::KeyConflict { key: op.to_string() }),
            None => Ok(Ok(Batch { op: op.to_string(), request: json, entries: Vec::new() })),
        }
    }

    fn finish(&self, b: Batch) -> Outcome {
        Outcome { entries: b.entries, replayed: false }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_lot(
        &mut self,
        b: &mut Batch,
        wallet: Wallet,
        amount: i64,
        kind: Kind,
        state: State,
        source: Source,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let expires_at = match wallet {
            Wallet::Growth => None,
            Wallet::Points => self.config.expiry.expires_at(at, self.config.tz)?,
        };
        let lot = Some(LotId(format!("{}#{}", b.op, b.entries.len())));
        self.emit(b, wallet, amount, kind, state, source, at, lot, expires_at)
    }

    /// Take up to `amount` from the wallet's available lots in spending order; returns what is left untaken.
    fn consume(
        &mut self,
        b: &mut Batch,
        wallet: Wallet,
        mut amount: i64,
        kind: Kind,
        source: &Source,
        at: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        while amount > 0 {
            let best = (0..self.lots.len())
                .filter(|&i| self.lots[i].wallet == wallet && self.lots[i].available > 0)
                .min_by_key(|&i| spend_order(&self.lots[i], i));
            let Some(i) = best else { break };
            let take = self.lots[i].available.min(amount);
            let lot = Some(self.lots[i].id.clone());
            self.emit(b, wallet, -take, kind, State::Available, source.clone(), at, lot, None)?;
            amount -= take;
        }
        Ok(amount)
    }

    /// What a clawback could not take: debt or a voided record, per the negative policy.
    fn shortfall(
        &mut self,
        b: &mut Batch,
        wallet: Wallet,
        left: i64,
        kind: Kind,
        source: Source,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        if left <= 0 {
            return Ok(());
        }
        let state = match self.config.negative {
            NegativePolicy::AllowNegativeBlockRedeem => State::Available,
            NegativePolicy::ClampAtZero => State::Voided,
        };
        self.emit(b, wallet, -left, kind, state, source, at, None, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        b: &mut Batch,
        wallet: Wallet,
        amount: i64,
        kind: Kind,
        state: State,
        source: Source,
        at: DateTime<Utc>,
        lot: Option<LotId>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), LedgerError> {
        let e = Entry {
            key: format!("{}#{}", b.op, b.entries.len()),
            op: b.op.clone(),
            request: b.request.clone(),
            wallet,
            amount,
            kind,
            state,
            source,
            at,
            lot,
            expires_at,
        };
        self.fold(e.clone())?;
        b.entries.push(e);
        Ok(())
    }

    /// Fold one entry into the state: the single place state changes, shared by operations and `apply`.
    fn fold(&mut self, e: Entry) -> Result<(), LedgerError> {
        if self.keys.contains(&e.key) {
            return Err(LedgerError::DuplicateEntry { key: e.key });
        }
        let opens = e.lot.as_ref().is_some_and(|l| l.0 == e.key);
        if let Some(lot) = &e.lot
            && !opens
            && !self.lot_index.contains_key(lot)
        {
            return Err(LedgerError::UnknownLot { key: e.key.clone(), lot: lot.0.clone() });
        }
        if opens && let Some(lot) = &e.lot {
            self.lot_index.insert(lot.clone(), self.lots.len());
            self.lots.push(Lot {
                id: lot.clone(),
                wallet: e.wallet,
                source: e.source.clone(),
                earned: e.amount,
                earned_at: e.at,
                available_at: match e.state {
                    State::Pending { available_at } => Some(available_at),
                    _ => None,
                },
                expires_at: e.expires_at,
                pending: 0,
                available: 0,
            });
        }
        if let Some(i) = e.lot.as_ref().and_then(|l| self.lot_index.get(l)).copied() {
            match e.state {
                State::Pending { .. } => self.lots[i].pending += e.amount,
                State::Available => self.lots[i].available += e.amount,
                State::Voided => {}
            }
        }
        if let Source::OrderLine { order_id, line_no } = e.source {
            let t = self.lines.entry((order_id, line_no, e.wallet)).or_default();
            match e.kind {
                Kind::Earn if opens => t.earned += e.amount,
                Kind::Reverse => t.reversed -= e.amount,
                // A merged member's line totals, carried so refunds of the line reverse exactly what it earned.
                Kind::Transfer if e.lot.is_none() && e.state == State::Voided => {
                    if e.amount > 0 {
                        t.earned += e.amount;
                    } else {
                        t.reversed -= e.amount;
                    }
                }
                _ => {}
            }
        }
        let idx = self.entries.len();
        self.ops.entry(e.op.clone()).or_insert_with(|| OpRecord { request: e.request.clone(), entries: Vec::new() });
        if let Some(rec) = self.ops.get_mut(&e.op) {
            rec.entries.push(idx);
        }
        self.keys.insert(e.key.clone());
        self.entries.push(e);
        Ok(())
    }
}

/// What one merge wrote on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// On the merged member: every lot closed, debt cancelled.
    pub from: Outcome,
    /// On the survivor: the same lots reopened, the debt, and the merged member's order-line totals.
    pub into: Outcome,
}

/// Hand the merged member's standing over to the survivor, as entries on both ledgers (nothing is edited,
/// and the two outcomes are written in one transaction).
///
/// * Each open lot (a pending or available remainder) closes on `from` and reopens on `into` with the same
///   wallet, source, remainder, return-window end and expiry, dated when it was earned (when it became
///   available, for an available remainder), so spending order, maturing, expiry and tier windows treat it
///   as if it had been earned by the survivor.
/// * Debt (lot-less available balance below zero) moves too: cancelled on `from`, owed on `into`.
/// * Every order line's earned and reversed totals are carried as voided records (never counted), so a
///   refund of a moved order reverses on the survivor exactly what the line earned, no more.
///
/// Idempotent by `key` on each side, like every operation.
pub fn merge(
    from: &mut Ledger,
    into: &mut Ledger,
    key: &str,
    from_member: i64,
    into_member: i64,
    at: DateTime<Utc>,
) -> Result<Merged, LedgerError> {
    validate_key(key)?;
    let out_request = Request::MergeOut { into_member, at };
    let in_request = Request::MergeIn { from_member, at };
    let (mut out, mut inn) = match (from.begin(key, &out_request)?, into.begin(key, &in_request)?) {
        (Err(from), Err(into)) => return Ok(Merged { from, into }),
        (Ok(out), Ok(inn)) => (out, inn),
        // One side written without the other: the store writes both in one transaction, so this is a
        // ledger that was not written by this code.
        _ => return Err(LedgerError::KeyConflict { key: key.to_string() }),
    };
    let lots: Vec<Lot> = from.lots.iter().filter(|l| l.pending > 0 || l.available > 0).cloned().collect();
    for lot in lots {
        let id = Some(lot.id.clone());
        if lot.pending > 0 {
            let state = State::Pending { available_at: lot.available_at.unwrap_or(at) };
            from.emit(
                &mut out,
                lot.wallet,
                -lot.pending,
                Kind::Transfer,
                state,
                lot.source.clone(),
                at,
                id.clone(),
                None,
            )?;
            let opened = Some(LotId(format!("{}#{}", inn.op, inn.entries.len())));
            into.emit(
                &mut inn,
                lot.wallet,
                lot.pending,
                Kind::Transfer,
                state,
                lot.source.clone(),
                lot.earned_at,
                opened,
                lot.expires_at,
            )?;
        }
        if lot.available > 0 {
            let st = State::Available;
            from.emit(&mut out, lot.wallet, -lot.available, Kind::Transfer, st, lot.source.clone(), at, id, None)?;
            let opened = Some(LotId(format!("{}#{}", inn.op, inn.entries.len())));
            let dated = lot.available_at.unwrap_or(lot.earned_at);
            into.emit(
                &mut inn,
                lot.wallet,
                lot.available,
                Kind::Transfer,
                st,
                lot.source,
                dated,
                opened,
                lot.expires_at,
            )?;
        }
    }
    for wallet in [Wallet::Points, Wallet::Growth] {
        let debt: i64 = from
            .entries
            .iter()
            .filter(|e| e.wallet == wallet && e.lot.is_none() && e.state == State::Available)
            .map(|e| e.amount)
            .sum();
        if debt < 0 {
            let (to_from, to_into) =
                (Source::Merge { member_id: into_member }, Source::Merge { member_id: from_member });
            from.emit(&mut out, wallet, -debt, Kind::Transfer, State::Available, to_from, at, None, None)?;
            into.emit(&mut inn, wallet, debt, Kind::Transfer, State::Available, to_into, at, None, None)?;
        }
    }
    let mut lines: Vec<((i64, i32, Wallet), LineTotals)> =
        from.lines.iter().map(|(k, t)| (*k, t.clone())).filter(|(_, t)| t.earned > 0).collect();
    lines.sort_by_key(|(k, _)| *k);
    for ((order_id, line_no, wallet), t) in lines {
        let source = Source::OrderLine { order_id, line_no };
        into.emit(&mut inn, wallet, t.earned, Kind::Transfer, State::Voided, source.clone(), at, None, None)?;
        if t.reversed > 0 {
            into.emit(&mut inn, wallet, -t.reversed, Kind::Transfer, State::Voided, source, at, None, None)?;
        }
    }
    Ok(Merged { from: from.finish(out), into: into.finish(inn) })
}

/// A broken invariant found by [`verify`], naming the entry (or lot, line, wallet) at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    #[error("entry key `{key}` appears more than once")]
    DuplicateKey { key: String },
    #[error("entry `{key}` names a lot that was never opened")]
    UnknownLot { key: String },
    #[error("entry `{key}` is in a different wallet than its lot")]
    WalletMismatch { key: String },
    #[error("entry `{key}` of operation `{op}` carries a different request than the operation's first entry")]
    OpMismatch { key: String, op: String },
    #[error("entry `{key}` opens a lot with a non-positive amount or an expiry on growth value")]
    BadLot { key: String },
    #[error("entry `{key}` credits or holds pending points outside a lot (only debt and shortfalls are lot-less)")]
    CreditWithoutLot { key: String },
    #[error("entry `{key}` takes lot `{lot}` below zero")]
    LotOverConsumed { key: String, lot: String },
    #[error("entry `{key}` takes the {wallet:?} balance below zero outside the negative policy")]
    NegativeOutsidePolicy { key: String, wallet: Wallet },
    #[error("entry `{key}` redeems while the balance is negative")]
    RedeemedIntoNegative { key: String },
    #[error("entry `{key}` spends or expires growth value")]
    GrowthSpent { key: String },
    #[error("entry `{key}` makes order {order_id} line {line_no} reverse more {wallet:?} than it earned")]
    ReversedMoreThanEarned { key: String, order_id: i64, line_no: i32, wallet: Wallet },
    #[error("entry `{key}` expires a lot before its expiry or one still pending")]
    ExpiredNotDue { key: String },
    #[error("entry `{key}` expires a different amount than the lot had left")]
    ExpiredWrongAmount { key: String },
    #[error("entry `{key}` makes a lot available before its return window closed")]
    MaturedEarly { key: String },
    #[error("the {wallet:?} {bucket} balance {sum} differs from its lots and debt {lots}")]
    SumMismatch { wallet: Wallet, bucket: &'static str, sum: i64, lots: i64 },
}

/// Check every invariant of one member's stored entries, in the order written; returns nothing when the
/// ledger is sound. `policy` is the program's negative policy (debt is only allowed under
/// [`NegativePolicy::AllowNegativeBlockRedeem`]).
pub fn verify(entries: &[Entry], policy: NegativePolicy) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut l = Ledger::new(Config { negative: policy, ..Config::default() });
    for e in entries {
        let key = e.key.clone();
        if l.keys.contains(&e.key) {
            v.push(Violation::DuplicateKey { key });
            continue;
        }
        if let Some(rec) = l.ops.get(&e.op)
            && rec.request != e.request
        {
            v.push(Violation::OpMismatch { key: key.clone(), op: e.op.clone() });
        }
        let opens = e.lot.as_ref().is_some_and(|x| x.0 == e.key);
        let lot_i = e.lot.as_ref().and_then(|x| l.lot_index.get(x)).copied();
        if e.lot.is_some() && !opens && lot_i.is_none() {
            v.push(Violation::UnknownLot { key });
            continue;
        }
        if opens && (e.amount <= 0 || (e.wallet == Wallet::Growth && e.expires_at.is_some())) {
            v.push(Violation::BadLot { key: key.clone() });
        }
        if let Some(i) = lot_i {
            let lot = &l.lots[i];
            if lot.wallet != e.wallet {
                v.push(Violation::WalletMismatch { key: key.clone() });
            }
            if e.kind == Kind::Expire {
                if lot.pending != 0 || lot.expires_at.is_none_or(|x| x > e.at) {
                    v.push(Violation::ExpiredNotDue { key: key.clone() });
                }
                if e.amount != -lot.available || e.state != State::Available {
                    v.push(Violation::ExpiredWrongAmount { key: key.clone() });
                }
            }
            if e.kind == Kind::Earn && e.state == State::Available && lot.available_at.is_some_and(|x| e.at < x) {
                v.push(Violation::MaturedEarly { key: key.clone() });
            }
        }
        // A merge's lot-less entries are records (carried line totals, voided) or move debt (available).
        let merge_record = e.kind == Kind::Transfer && !matches!(e.state, State::Pending { .. });
        if e.lot.is_none() && !merge_record && (e.amount >= 0 || matches!(e.state, State::Pending { .. })) {
            v.push(Violation::CreditWithoutLot { key: key.clone() });
        }
        if e.lot.is_none() && e.state == State::Available && e.amount < 0 && policy == NegativePolicy::ClampAtZero {
            v.push(Violation::NegativeOutsidePolicy { key: key.clone(), wallet: e.wallet });
        }
        if e.wallet == Wallet::Growth && matches!(e.kind, Kind::Redeem | Kind::Expire) {
            v.push(Violation::GrowthSpent { key: key.clone() });
        }
        if l.fold(e.clone()).is_err() {
            continue;
        }
        if let Some(i) = lot_i.or_else(|| e.lot.as_ref().and_then(|x| l.lot_index.get(x)).copied()) {
            let lot = &l.lots[i];
            if lot.pending < 0 || lot.available < 0 {
                v.push(Violation::LotOverConsumed { key: key.clone(), lot: lot.id.0.clone() });
            }
        }
        if e.kind == Kind::Redeem && l.available(e.wallet) < 0 {
            v.push(Violation::RedeemedIntoNegative { key: key.clone() });
        }
        if let Source::OrderLine { order_id, line_no } = e.source
            && e.kind == Kind::Reverse
            && let Some(t) = l.lines.get(&(order_id, line_no, e.wallet))
            && t.reversed > t.earned
        {
            v.push(Violation::ReversedMoreThanEarned { key, order_id, line_no, wallet: e.wallet });
        }
    }
    for wallet in [Wallet::Points, Wallet::Growth] {
        let sum = |want: fn(&State) -> bool| -> i64 {
            l.entries.iter().filter(|e| e.wallet == wallet && want(&e.state)).map(|e| e.amount).sum()
        };
        let lots = |f: fn(&Lot) -> i64| -> i64 { l.lots.iter().filter(|x| x.wallet == wallet).map(f).sum() };
        let debt: i64 = l
            .entries
            .iter()
            .filter(|e| e.wallet == wallet && e.lot.is_none() && e.state == State::Available)
            .map(|e| e.amount)
            .sum();
        let available = sum(|s| *s == State::Available);
        if available != lots(|x| x.available) + debt {
            v.push(Violation::SumMismatch {
                wallet,
                bucket: "available",
                sum: available,
                lots: lots(|x| x.available) + debt,
            });
        }
        let pending = sum(|s| matches!(s, State::Pending { .. }));
        if pending != lots(|x| x.pending) {
            v.push(Violation::SumMismatch { wallet, bucket: "pending", sum: pending, lots: lots(|x| x.pending) });
        }
    }
    v
}
