//! Member tags (标签): rule tags, model tags, keyword tags and manual tags, each with a weight that decays.
//!
//! A member-tag is a claim about a member ("敏感肌", "high_value", "segment:重要价值") held with a weight in
//! (0, 1] and the time it was last supported by evidence. Four sources produce the evidence:
//!
//! - **Rule tags** ([`rule`]): a condition in a small expression language over named member features,
//!   e.g. `orders_365d >= 3 and aov_fen > 30000 and not city in ["上海", "北京"]`, compiled once and
//!   recomputed for every member on each run. [`RuleSet`] turns the rules that hold into observations.
//! - **Model tags**: the caller turns analytics results (RFM segment, "due to repurchase", churn risk) into
//!   [`TagObservation`]s with [`TagSource::Model`]; the model's confidence can be the strength.
//! - **Keyword tags** ([`keyword`]): multi-pattern substring matching of Chinese and English keywords in
//!   reviews and notes after NFKC + lowercase normalisation, with a guard against simple negations
//!   ("不是敏感肌", "not sensitive").
//! - **Manual tags**: set by an operator; they never decay unless a half-life is configured for them.
//!
//! [`update_member_tags`] ([`weight`]) folds this run's observations into the previous member-tags:
//! weights decay exponentially with a half-life per tag category, `w(t) = w0 · 0.5^((t − t0) / h)`, are
//! reinforced by new evidence with a noisy-OR `w = 1 − (1 − w_decayed)(1 − strength)`, and tags below a
//! floor weight are dropped. Every addition, drop and reweighting carries the reason an operator reads.

pub mod keyword;
pub mod rule;
pub mod weight;

pub use keyword::{
    KeywordHits, KeywordMatch, KeywordParams, KeywordScan, KeywordTagDef, KeywordTagger, MemberText, normalize_text,
};
pub use rule::{
    CmpOp, CompiledCondition, Condition, FeatureDecl, FeatureSchema, FeatureType, MemberFeatures, RuleError, RuleSet,
    RuleTagDef, Truth, Value, ValueRef, parse_condition,
};
pub use weight::{
    CategoryPolicy, ChangeKind, MemberTag, TagChange, TagError, TagObservation, TagSource, TagUpdate, TagWeightParams,
    decayed_weight, update_member_tags,
};
