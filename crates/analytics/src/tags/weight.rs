//! Member-tag weights: exponential decay, reinforcement by new evidence, and the floor that drops a tag.
//!
//! Each member-tag keeps `support_weight` w0, the weight it had when it was last supported, and
//! `last_supported_at` t0. Its weight at time t is
//!
//! ```text
//! w(t) = w0 · 0.5^((t − t0) / h)          h = half-life in days of the tag's category
//! ```
//!
//! so a tag loses half its weight every `h` days without evidence. Manual tags have no half-life (they keep
//! their weight) unless [`TagWeightParams::manual_half_life_days`] is set.
//!
//! **Reinforcement** (noisy-OR): an observation of strength s ∈ (0, 1] at time t gives
//!
//! ```text
//! w0' = 1 − (1 − w(t)) · (1 − s)           t0' = t
//! ```
//!
//! Reading a weight as "how sure we are the tag holds" and observations as independent evidence, this is
//! the probability that at least one piece of evidence is right. It stays in (0, 1], never lowers a
//! weight, a fact-like observation (s = 1: a rule that holds, a manual tag) resets the weight to 1, and
//! weak repeated evidence (a keyword hit at s = 0.5) climbs with diminishing returns 0.5 → 0.75 → 0.875.
//! An observation older than `t0` (a late-arriving review) is decayed to `t0` before it is combined and
//! does not move `t0`.
//!
//! **Drop**: a tag whose weight at `as_of` is below [`TagWeightParams::floor`] is dropped. A category can
//! also be marked [`CategoryPolicy::drop_when_unobserved`] for state-like tags (lifecycle stage, RFM
//! segment) whose rules or models are recomputed for every member of the run: such a rule or model tag
//! that was not observed this run is dropped at once instead of fading.
//!
//! Member-tags are keyed by (member, source, tag): the same tag from a manual entry and from a keyword
//! hit are two rows, so a keyword never turns a manual tag into a decaying one.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Where a member-tag's evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// A rule condition over member features, recomputed each run.
    Rule,
    /// A model result turned into a tag by the caller (RFM segment, due to repurchase, churn risk).
    Model,
    /// Keywords found in the member's reviews or notes.
    Keyword,
    /// Set by an operator.
    Manual,
}

/// A member-tag as stored between runs and shown on the member profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberTag {
    /// The member.
    pub member_id: i64,
    /// The tag name.
    pub tag: String,
    /// The tag's category; selects its half-life.
    pub category: String,
    /// Where its evidence comes from.
    pub source: TagSource,
    /// Weight at the `as_of` of the run that produced this row (what the profile shows).
    pub weight: f64,
    /// Weight at `last_supported_at` (w0 of the decay formula); the next run decays from this.
    pub support_weight: f64,
    /// When evidence last supported the tag.
    pub last_supported_at: DateTime<Utc>,
    /// When the member first received the tag.
    pub first_tagged_at: DateTime<Utc>,
    /// The reason of the last supporting evidence.
    pub reason: String,
}

/// One piece of evidence for a member-tag from this run (a rule that holds, a model result, a keyword
/// hit in one text, a manual assignment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagObservation {
    /// The member.
    pub member_id: i64,
    /// The tag name.
    pub tag: String,
    /// The tag's category.
    pub category: String,
    /// The evidence source.
    pub source: TagSource,
    /// When the evidence holds (run time for rules and models, text time for keywords).
    pub at: DateTime<Utc>,
    /// Strength in (0, 1]: 1 for facts, a model's probability, a keyword's per-text strength.
    pub strength: f64,
    /// Why, in words an operator reads.
    pub reason: String,
}

/// Decay and drop policy of one tag category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryPolicy {
    /// Half-life in days; `None` means tags of this category do not decay.
    pub half_life_days: Option<f64>,
    /// Drop an unobserved rule or model tag of this category at once (state-like categories whose rules
    /// or models are recomputed for every member passed to the run). Keyword and manual tags are exempt.
    #[serde(default)]
    pub drop_when_unobserved: bool,
}

/// Parameters of [`update_member_tags`].
///
/// Defaults (starting points to tune per shop): half-lives basic 365 d, channel 180 d, value 90 d,
/// interest 60 d, behaviour 30 d, lifecycle 30 d and funnel 7 d with drop-when-unobserved (states the run
/// recomputes: a stage, where a member stalled in a funnel); other categories 90 d; manual
/// tags do not decay; floor 0.1; decay changes under 0.05 are not reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TagWeightParams {
    /// Policy per category name.
    pub categories: BTreeMap<String, CategoryPolicy>,
    /// Half-life in days for categories not listed.
    pub default_half_life_days: f64,
    /// Half-life in days for manual tags; `None` (default) means manual tags never decay.
    pub manual_half_life_days: Option<f64>,
    /// Tags whose weight falls below this are dropped.
    pub floor: f64,
    /// A tag whose weight only decayed is reported as reweighted when it moved at least this much since
    /// the previous run (reinforced tags are always reported).
    pub min_reported_change: f64,
}

impl Default for TagWeightParams {
    fn default() -> Self {
        let policy = |days: f64, drop: bool| CategoryPolicy { half_life_days: Some(days), drop_when_unobserved: drop };
        let categories = [
            ("basic", policy(365.0, false)),
            ("channel", policy(180.0, false)),
            ("value", policy(90.0, false)),
            ("interest", policy(60.0, false)),
            ("behaviour", policy(30.0, false)),
            ("lifecycle", policy(30.0, true)),
            ("funnel", policy(7.0, true)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            categories,
            default_half_life_days: 90.0,
            manual_half_life_days: None,
            floor: 0.1,
            min_reported_change: 0.05,
        }
    }
}

/// Why a tag update was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TagError {
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {detail}")]
    InvalidParam {
        /// Which parameter.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// An observation's strength is not in (0, 1].
    #[error("observation of tag `{tag}` for member {member_id}: strength {strength} is not in (0, 1]")]
    InvalidStrength {
        /// The member.
        member_id: i64,
        /// The tag.
        tag: String,
        /// The offending strength.
        strength: f64,
    },
    /// An observation is dated after the run's `as_of`.
    #[error("observation of tag `{tag}` for member {member_id} at {at} is after as_of {as_of}")]
    FutureObservation {
        /// The member.
        member_id: i64,
        /// The tag.
        tag: String,
        /// The observation time.
        at: DateTime<Utc>,
        /// The run time.
        as_of: DateTime<Utc>,
    },
    /// The same (member, source, tag) appears twice among the previous tags.
    #[error("member {member_id} has tag `{tag}` from {from:?} twice in the previous tags")]
    DuplicateTag {
        /// The member.
        member_id: i64,
        /// The tag.
        tag: String,
        /// The tag's source.
        from: TagSource,
    },
    /// A previous tag has a weight outside [0, 1] or NaN.
    #[error("member {member_id} tag `{tag}`: stored weight {weight} is not in [0, 1]")]
    InvalidWeight {
        /// The member.
        member_id: i64,
        /// The tag.
        tag: String,
        /// The offending weight.
        weight: f64,
    },
    /// A keyword tag definition is invalid.
    #[error("keyword tag `{tag}`: {detail}")]
    InvalidKeywordDef {
        /// The tag.
        tag: String,
        /// What is wrong.
        detail: String,
    },
    /// The keyword automaton could not be built (e.g. too many patterns).
    #[error("keyword matcher: {0}")]
    Matcher(String),
}

/// What happened to a member-tag in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The member received the tag.
    Added,
    /// The tag was removed (fell below the floor, or a state-like tag was not observed).
    Dropped,
    /// The weight changed: reinforced by evidence, or decayed by at least the reporting threshold.
    Reweighted,
}

/// One change to a member-tag, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagChange {
    /// The member.
    pub member_id: i64,
    /// The tag.
    pub tag: String,
    /// The tag's source.
    pub source: TagSource,
    /// What happened.
    pub kind: ChangeKind,
    /// Weight shown before this run (`None` for an added tag).
    pub old_weight: Option<f64>,
    /// Weight at `as_of` (`None` for a dropped tag).
    pub new_weight: Option<f64>,
    /// Why.
    pub reason: String,
}

/// Result of [`update_member_tags`]: the member-tags to store and the changes to log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagUpdate {
    /// Surviving member-tags, sorted by (member, source, tag).
    pub tags: Vec<MemberTag>,
    /// Changes, sorted by (member, source, tag).
    pub changes: Vec<TagChange>,
}

/// `w0 · 0.5^((t − t0)/h)`; no decay when `half_life_days` is `None` or `t ≤ t0`.
pub fn decayed_weight(w0: f64, last_supported_at: DateTime<Utc>, t: DateTime<Utc>, half_life_days: Option<f64>) -> f64 {
    let Some(h) = half_life_days else {
        return w0;
    };
    let elapsed_days = (t - last_supported_at).num_milliseconds() as f64 / 86_400_000.0;
    if elapsed_days <= 0.0 {
        return w0;
    }
    w0 * 0.5f64.powf(elapsed_days / h)
}

fn noisy_or(w: f64, s: f64) -> f64 {
    (1.0 - (1.0 - w) * (1.0 - s)).clamp(0.0, 1.0)
}

impl TagWeightParams {
    fn validate(&self) -> Result<(), TagError> {
        let bad = |name: &str, detail: String| Err(TagError::InvalidParam { name: name.to_string(), detail });
        let half_life_ok = |h: f64| h.is_finite() && h > 0.0;
        if !half_life_ok(self.default_half_life_days) {
            return bad(
                "default_half_life_days",
                format!("{} is not a positive number of days", self.default_half_life_days),
            );
        }
        if let Some(h) = self.manual_half_life_days
            && !half_life_ok(h)
        {
            return bad("manual_half_life_days", format!("{h} is not a positive number of days"));
        }
        for (cat, p) in &self.categories {
            if let Some(h) = p.half_life_days
                && !half_life_ok(h)
            {
                return bad(
                    &format!("categories.{cat}.half_life_days"),
                    format!("{h} is not a positive number of days"),
                );
            }
        }
        if !(0.0..1.0).contains(&self.floor) {
            return bad("floor", format!("{} is not in [0, 1)", self.floor));
        }
        if self.min_reported_change.is_nan() || self.min_reported_change < 0.0 {
            return bad("min_reported_change", format!("{} is not a non-negative number", self.min_reported_change));
        }
        Ok(())
    }

    /// The half-life that applies to a tag of `category` from `source`.
    pub fn half_life_days(&self, category: &str, source: TagSource) -> Option<f64> {
        if source == TagSource::Manual {
            return self.manual_half_life_days;
        }
        match self.categories.get(category) {
            Some(p) => p.half_life_days,
            None => Some(self.default_half_life_days),
        }
    }

    fn drops_when_unobserved(&self, category: &str, source: TagSource) -> bool {
        matches!(source, TagSource::Rule | TagSource::Model)
            && self.categories.get(category).is_some_and(|p| p.drop_when_unobserved)
    }
}

fn fmt_half_life(h: Option<f64>) -> String {
    match h {
        Some(h) => format!("half-life {h} d"),
        None => "no decay".into(),
    }
}

/// Folds this run's observations into the previous member-tags at `as_of`.
///
/// `previous` must hold the stored tags of exactly the members this run covers (a state-like category's
/// unobserved tags are dropped). Returns the new member-tags and the changes with reasons; errors on
/// invalid parameters, strengths outside (0, 1], observations after `as_of`, duplicate or invalid stored rows.
pub fn update_member_tags(
    previous: &[MemberTag],
    observations: &[TagObservation],
    as_of: DateTime<Utc>,
    params: &TagWeightParams,
) -> Result<TagUpdate, TagError> {
    params.validate()?;
    for t in previous {
        if !(0.0..=1.0).contains(&t.support_weight) || !(0.0..=1.0).contains(&t.weight) {
            return Err(TagError::InvalidWeight {
                member_id: t.member_id,
                tag: t.tag.clone(),
                weight: if (0.0..=1.0).contains(&t.weight) { t.support_weight } else { t.weight },
            });
        }
    }
    for o in observations {
        if !(o.strength > 0.0 && o.strength <= 1.0) {
            return Err(TagError::InvalidStrength { member_id: o.member_id, tag: o.tag.clone(), strength: o.strength });
        }
        if o.at > as_of {
            return Err(TagError::FutureObservation { member_id: o.member_id, tag: o.tag.clone(), at: o.at, as_of });
        }
    }
    // Sort both sides by (member, source, tag) and merge-join them: no key is cloned or hashed.
    let mut prev: Vec<&MemberTag> = previous.iter().collect();
    prev.par_sort_unstable_by(|a, b| key_of_tag(a).cmp(&key_of_tag(b)));
    if let Some(w) = prev.windows(2).find(|w| key_of_tag(w[0]) == key_of_tag(w[1])) {
        return Err(TagError::DuplicateTag { member_id: w[0].member_id, tag: w[0].tag.clone(), from: w[0].source });
    }
    let mut obs: Vec<&TagObservation> = observations.iter().collect();
    obs.par_sort_unstable_by(|a, b| (key_of_obs(a), a.at).cmp(&(key_of_obs(b), b.at)));

    let mut groups: Vec<(Option<&MemberTag>, &[&TagObservation])> = Vec::with_capacity(prev.len().max(obs.len()));
    let (mut i, mut j) = (0, 0);
    while i < prev.len() || j < obs.len() {
        let obs_end = |j: usize| {
            let k = key_of_obs(obs[j]);
            j + obs[j..].iter().take_while(|o| key_of_obs(o) == k).count()
        };
        let order = match (prev.get(i), obs.get(j)) {
            (Some(p), Some(o)) => key_of_tag(p).cmp(&key_of_obs(o)),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                groups.push((Some(prev[i]), &[]));
                i += 1;
            }
            Ordering::Equal => {
                let end = obs_end(j);
                groups.push((Some(prev[i]), &obs[j..end]));
                i += 1;
                j = end;
            }
            Ordering::Greater => {
                let end = obs_end(j);
                groups.push((None, &obs[j..end]));
                j = end;
            }
        }
    }
    let folded: Vec<(Option<MemberTag>, Option<TagChange>)> =
        groups.par_iter().map(|(old, evidence)| fold_one(*old, evidence, as_of, params)).collect();
    let mut tags = Vec::with_capacity(folded.len());
    let mut changes = Vec::new();
    for (t, c) in folded {
        tags.extend(t);
        changes.extend(c);
    }
    Ok(TagUpdate { tags, changes })
}

fn key_of_tag(t: &MemberTag) -> (i64, TagSource, &str) {
    (t.member_id, t.source, t.tag.as_str())
}

fn key_of_obs(o: &TagObservation) -> (i64, TagSource, &str) {
    (o.member_id, o.source, o.tag.as_str())
}

/// One member-tag's new state and change, from its stored row (if any) and this run's evidence for it
/// (sorted by time).
fn fold_one(
    old: Option<&MemberTag>,
    evidence: &[&TagObservation],
    as_of: DateTime<Utc>,
    params: &TagWeightParams,
) -> (Option<MemberTag>, Option<TagChange>) {
    let Some(first_key) = old.map(key_of_tag).or_else(|| evidence.first().map(|o| key_of_obs(o))) else {
        return (None, None);
    };
    let (member_id, source, tag) = first_key;
    let category = evidence.last().map(|o| o.category.as_str()).or(old.map(|t| t.category.as_str())).unwrap_or("");
    let h = params.half_life_days(category, source);
    let change = |kind, old_weight, new_weight, reason| {
        Some(TagChange { member_id, tag: tag.to_string(), source, kind, old_weight, new_weight, reason })
    };

    let Some(last) = evidence.last() else {
        // No evidence this run: decay, or drop.
        let Some(old) = old else { return (None, None) };
        if params.drops_when_unobserved(category, source) {
            return (
                None,
                change(
                    ChangeKind::Dropped,
                    Some(old.weight),
                    None,
                    format!(
                        "no longer observed; `{category}` tags are recomputed every run and are \
                         dropped when they stop holding"
                    ),
                ),
            );
        }
        let w = decayed_weight(old.support_weight, old.last_supported_at, as_of, h);
        if w < params.floor {
            return (
                None,
                change(
                    ChangeKind::Dropped,
                    Some(old.weight),
                    None,
                    format!(
                        "weight {w:.3} fell below the floor {} (last supported {}, {})",
                        params.floor,
                        old.last_supported_at.date_naive(),
                        fmt_half_life(h)
                    ),
                ),
            );
        }
        let moved = (w - old.weight).abs();
        let reweighted = if moved > 0.0 && moved >= params.min_reported_change {
            change(
                ChangeKind::Reweighted,
                Some(old.weight),
                Some(w),
                format!(
                    "decayed from {:.3} to {w:.3} since last supported {} ({})",
                    old.weight,
                    old.last_supported_at.date_naive(),
                    fmt_half_life(h)
                ),
            )
        } else {
            None
        };
        return (Some(MemberTag { weight: w, ..old.clone() }), reweighted);
    };

    // Evidence this run: fold it in chronologically from the stored state.
    let (mut w0, mut t0, first) = match old {
        Some(o) => (o.support_weight, Some(o.last_supported_at), o.first_tagged_at),
        None => (0.0, None, evidence[0].at),
    };
    for o in evidence {
        match t0 {
            Some(t) if o.at < t => {
                // Late evidence: decay it to the current support time; the support time stays.
                w0 = noisy_or(w0, decayed_weight(o.strength, o.at, t, h));
            }
            Some(t) => {
                w0 = noisy_or(decayed_weight(w0, t, o.at, h), o.strength);
                t0 = Some(o.at);
            }
            None => {
                w0 = o.strength;
                t0 = Some(o.at);
            }
        }
    }
    let t0 = t0.unwrap_or(last.at);
    let w = decayed_weight(w0, t0, as_of, h);
    let n = evidence.len();
    let note = if n == 1 { String::new() } else { format!(" ({n} observations this run)") };
    let c = match old {
        // Too weak to become a tag: nothing is stored and nothing changed.
        None if w < params.floor => return (None, None),
        None => change(ChangeKind::Added, None, Some(w), format!("{}{note}", last.reason)),
        Some(o) if w < params.floor => {
            return (
                None,
                change(
                    ChangeKind::Dropped,
                    Some(o.weight),
                    None,
                    format!("weight {w:.3} is below the floor {} even with this run's evidence", params.floor),
                ),
            );
        }
        Some(o) => {
            change(ChangeKind::Reweighted, Some(o.weight), Some(w), format!("reinforced: {}{note}", last.reason))
        }
    };
    let t = MemberTag {
        member_id,
        tag: tag.to_string(),
        category: category.to_string(),
        source,
        weight: w,
        support_weight: w0,
        last_supported_at: t0,
        first_tagged_at: first,
        reason: last.reason.clone(),
    };
    (Some(t), c)
}

#[cfg(test)]
mod tests;
