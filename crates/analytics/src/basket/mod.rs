//! Market-basket patterns ("bought together"): frequent itemsets by FP-growth and the association rules
//! they support.
//!
//! # What it computes
//! Input is one basket per transaction (an order), each a list of item ids (`u32`; [`ItemDictionary`] maps
//! SKUs to ids and back). An item listed twice in one basket counts once. With `n` transactions, the
//! *count* of an itemset `X` is the number of baskets that contain every item of `X`, and its *support* is
//! `count / n`. An itemset is *frequent* when its count reaches the minimum count, which is
//! `ceil(min_support × n)` (computed in `f64`, as mlxtend's `fpgrowth` does) or the absolute
//! [`BasketParams::min_count`] when that is given.
//!
//! Every frequent itemset of two or more items is then split every way into antecedent `A` ⇒ consequent
//! `C` (both non-empty, disjoint, union the itemset). The metrics are those of mlxtend's
//! `association_rules` (Raschka 2018), evaluated in the same floating-point order so that thresholds agree
//! with it to the last bit:
//! - support = supp(A∪C);
//! - confidence = supp(A∪C) / supp(A) (mlxtend evaluates it as `(supp(A∪C)·n) / (supp(A)·n)`, and so do
//!   we);
//! - lift = confidence / supp(C);
//! - leverage = supp(A∪C) − supp(A)·supp(C);
//! - conviction = (1 − supp(C)) / (1 − confidence), infinite when confidence = 1, which is carried as
//!   `None` so that the result serialises to JSON (`null`).
//!
//! A rule is kept when confidence ≥ `min_confidence` and lift ≥ `min_lift`.
//!
//! # Why FP-growth is written here
//! No maintained Rust crate mines frequent itemsets (the few FP-growth crates on crates.io are unmaintained
//! single-author experiments without support thresholds as fractions, `max_len` or association rules), so
//! the algorithm of Han, Pei & Yin (2000) is implemented from scratch in [`fpgrowth`]: a prefix tree held in
//! flat arena vectors (no `Rc`/`RefCell`), items ranked by descending frequency, one conditional tree per
//! item and suffix, a direct enumeration when a conditional tree is a single path, and the top-level items
//! mined in parallel with rayon. Output order is deterministic whatever the thread count.
//!
//! # References
//! - J. Han, J. Pei, Y. Yin, "Mining frequent patterns without candidate generation", SIGMOD 2000.
//! - R. Agrawal, R. Srikant, "Fast algorithms for mining association rules", VLDB 1994 (rule metrics).
//! - S. Raschka, "MLxtend", JOSS 3(24) 2018: `frequent_patterns.fpgrowth` and `association_rules`.

mod dictionary;
mod fpgrowth;
mod rules;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use dictionary::ItemDictionary;

/// Thresholds for [`mine`]. Every field has a default, so a config file may name only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BasketParams {
    /// Minimum support of a frequent itemset, as a fraction of all transactions, in (0, 1].
    /// Default 0.01 (one basket in a hundred). Ignored when `min_count` is set.
    pub min_support: f64,
    /// Minimum count of a frequent itemset, in baskets (≥ 1); when set it replaces `min_support`.
    /// Default `None`.
    pub min_count: Option<u64>,
    /// Minimum confidence of a rule, in [0, 1]. Default 0.3.
    pub min_confidence: f64,
    /// Minimum lift of a rule (≥ 0); the default 1.0 keeps rules whose items go together at least as
    /// often as chance.
    pub min_lift: f64,
    /// Largest itemset mined (≥ 1), `None` for no limit. Default `Some(4)`: rules longer than that are
    /// rarely actionable and the number of itemsets grows combinatorially with it.
    pub max_len: Option<usize>,
    /// Guard against a combinatorial explosion (e.g. a tiny `min_support` with no `max_len`): mining stops
    /// with [`BasketError::TooManyItemsets`] once more itemsets than this are frequent. Default 2,000,000.
    pub max_itemsets: usize,
}

impl Default for BasketParams {
    fn default() -> Self {
        Self {
            min_support: 0.01,
            min_count: None,
            min_confidence: 0.3,
            min_lift: 1.0,
            max_len: Some(4),
            max_itemsets: 2_000_000,
        }
    }
}

/// An itemset that appears in at least the minimum number of baskets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequentItemset {
    /// Item ids, ascending.
    pub items: Vec<u32>,
    /// Number of baskets containing all of `items`.
    pub count: u64,
    /// `count / n_transactions`.
    pub support: f64,
}

/// An association rule "baskets with `antecedent` also hold `consequent`", with mlxtend's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Item ids of the "if" side, ascending.
    pub antecedent: Vec<u32>,
    /// Item ids of the "then" side, ascending; disjoint from `antecedent`.
    pub consequent: Vec<u32>,
    /// Baskets holding every item of both sides.
    pub count: u64,
    /// supp(A).
    pub antecedent_support: f64,
    /// supp(C).
    pub consequent_support: f64,
    /// supp(A∪C): the share of baskets the rule is about.
    pub support: f64,
    /// supp(A∪C) / supp(A): how often the consequent follows the antecedent.
    pub confidence: f64,
    /// confidence / supp(C): how much more often than chance (1 = independent).
    pub lift: f64,
    /// supp(A∪C) − supp(A)·supp(C): the excess share of baskets over independence.
    pub leverage: f64,
    /// (1 − supp(C)) / (1 − confidence); `None` means infinite (the rule never failed).
    pub conviction: Option<f64>,
}

/// What [`mine`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BasketRules {
    /// Number of baskets mined, empty ones included (they lower every support).
    pub n_transactions: u64,
    /// The minimum count an itemset needed (from `min_support` or `min_count`).
    pub min_count: u64,
    /// Every frequent itemset, ordered by size and then by item ids.
    pub itemsets: Vec<FrequentItemset>,
    /// Rules passing `min_confidence` and `min_lift`, strongest first: by lift, then confidence, then
    /// support (all descending), then antecedent and consequent ids.
    pub rules: Vec<Rule>,
}

/// Why [`mine`] (or [`ItemDictionary::from_baskets`]) refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BasketError {
    /// `min_support` must be a number in (0, 1]; 0 would make every combination of items "frequent".
    #[error("min_support must be in (0, 1], got {0}")]
    InvalidMinSupport(f64),
    /// `min_count` must be at least 1.
    #[error("min_count must be at least 1")]
    InvalidMinCount,
    /// `min_confidence` must be a number in [0, 1].
    #[error("min_confidence must be in [0, 1], got {0}")]
    InvalidMinConfidence(f64),
    /// `min_lift` must be a finite number ≥ 0.
    #[error("min_lift must be a finite number >= 0, got {0}")]
    InvalidMinLift(f64),
    /// `max_len` must be at least 1 when given.
    #[error("max_len must be at least 1")]
    InvalidMaxLen,
    /// More itemsets are frequent than `max_itemsets` allows: raise `min_support` or lower `max_len`.
    #[error("more than {limit} frequent itemsets; raise min_support or lower max_len")]
    TooManyItemsets {
        /// The `max_itemsets` limit that was exceeded.
        limit: usize,
    },
    /// More distinct item keys than `u32` ids.
    #[error("more than 2^32 - 1 distinct items")]
    TooManyItems,
    /// More baskets, or basket entries in all, than the miner's `u32` indices address (about 4.29 billion).
    #[error("input too large: more than 2^32 - 1 baskets or basket entries")]
    InputTooLarge,
}

/// Mines the frequent itemsets of `transactions` and the association rules among them.
///
/// Empty input gives an empty result (`n_transactions` 0); invalid thresholds give a typed error.
pub fn mine(transactions: &[Vec<u32>], params: &BasketParams) -> Result<BasketRules, BasketError> {
    mine_baskets(transactions, params)
}

/// [`mine`] over baskets held one after another in one buffer, taken by value: the miner rewrites the
/// buffer in place into the form it mines, and frees the baskets' offsets, instead of building its own copy
/// beside them (at ten million orders, about as large as the baskets themselves).
pub fn mine_flat(transactions: FlatBaskets, params: &BasketParams) -> Result<BasketRules, BasketError> {
    mine_baskets(transactions, params)
}

/// Baskets of item ids, however the caller holds them.
trait Baskets: Sized {
    fn count(&self) -> usize;
    fn basket(&self, i: usize) -> &[u32];
    /// Each basket as its ascending, de-duplicated ranks (`rank` gives an id's, or drops it), in one buffer,
    /// with the `(start, end, 1)` of each basket that keeps an item. Borrowed baskets are copied into one
    /// buffer first, which is then ranked in place as [`FlatBaskets`] are.
    fn into_ranked(self, rank: impl Fn(u32) -> Option<u32>) -> (Vec<u32>, Vec<fpgrowth::Path>) {
        let total = (0..self.count()).map(|t| self.basket(t).len()).sum();
        let mut flat = FlatBaskets::with_capacity(self.count(), total);
        for t in 0..self.count() {
            flat.push(self.basket(t).iter().copied());
        }
        flat.into_ranked(rank)
    }
}

impl Baskets for &[Vec<u32>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn basket(&self, i: usize) -> &[u32] {
        &self[i]
    }
}

/// Baskets one after another in one buffer. A year of a large shop's orders held as `Vec<Vec<u32>>` costs a
/// header and an allocation per order (about 40 bytes beside the 4 of each item: over 400 MB at ten million
/// orders); here an order costs its items and one end offset.
#[derive(Debug, Clone, Default)]
pub struct FlatBaskets {
    items: Vec<u32>,
    ends: Vec<usize>,
}

impl FlatBaskets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one basket.
    pub fn push(&mut self, basket: impl IntoIterator<Item = u32>) {
        self.items.extend(basket);
        self.ends.push(self.items.len());
    }

    /// Number of baskets.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Room for `baskets` baskets of `items` items in all: sized up front, the buffers are not copied as
    /// they grow (a large vector's growth holds the old and the new buffer at once).
    pub fn with_capacity(baskets: usize, items: usize) -> Self {
        Self { items: Vec::with_capacity(items), ends: Vec::with_capacity(baskets) }
    }
}

impl Baskets for FlatBaskets {
    fn count(&self) -> usize {
        self.ends.len()
    }
    fn basket(&self, i: usize) -> &[u32] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.items[start..self.ends[i]]
    }
    /// Rewrites the item buffer in place: a basket's ranks never take more room than its ids, so each is
    /// written at or before where it was read.
    fn into_ranked(self, rank: impl Fn(u32) -> Option<u32>) -> (Vec<u32>, Vec<fpgrowth::Path>) {
        let Self { mut items, ends } = self;
        let mut paths = Vec::with_capacity(ends.len());
        let (mut read, mut write) = (0usize, 0usize);
        for end in ends {
            let start = write;
            for r in read..end {
                if let Some(ranked) = rank(items[r]) {
                    items[write] = ranked;
                    write += 1;
                }
            }
            read = end;
            let kept = fpgrowth::sort_dedup(&mut items[start..write]);
            write = start + kept;
            if kept > 0 {
                paths.push((start as u32, write as u32, 1));
            }
        }
        items.truncate(write);
        (items, paths)
    }
}

fn mine_baskets<B: Baskets>(transactions: B, params: &BasketParams) -> Result<BasketRules, BasketError> {
    validate(params)?;
    let n = transactions.count() as u64;
    let min_count = match params.min_count {
        Some(c) => c,
        // Same expression as mlxtend's `math.ceil(min_support * len(df.index))`; at least one basket.
        None => ((params.min_support * n as f64).ceil() as u64).max(1),
    };
    let max_len = params.max_len.unwrap_or(usize::MAX);
    let itemsets = fpgrowth::frequent_itemsets(transactions, min_count, max_len, params.max_itemsets)?;
    let rules = rules::association_rules(&itemsets, n, params.min_confidence, params.min_lift);
    Ok(BasketRules { n_transactions: n, min_count, itemsets, rules })
}

fn validate(p: &BasketParams) -> Result<(), BasketError> {
    match p.min_count {
        Some(0) => return Err(BasketError::InvalidMinCount),
        Some(_) => {}
        None => {
            if !(p.min_support > 0.0 && p.min_support <= 1.0) {
                return Err(BasketError::InvalidMinSupport(p.min_support));
            }
        }
    }
    if !(0.0..=1.0).contains(&p.min_confidence) {
        return Err(BasketError::InvalidMinConfidence(p.min_confidence));
    }
    if !(p.min_lift.is_finite() && p.min_lift >= 0.0) {
        return Err(BasketError::InvalidMinLift(p.min_lift));
    }
    if p.max_len == Some(0) {
        return Err(BasketError::InvalidMaxLen);
    }
    Ok(())
}
