//! Top paths to purchase (购买路径): which short sequences of event types most often lead to a purchase.
//!
//! # Definition
//!
//! For every *target* event (default `purchase`), its path is the sequence of event types of the events
//! before it, in time order, within its scope, with consecutive duplicates collapsed
//! (`product_view, product_view, add_to_cart` → `product_view → add_to_cart`), keeping the last
//! `max_steps` (default 4) types after collapsing. The target itself is not part of the path (the label
//! ends with it). Paths are counted over all target events; the report gives the number of distinct paths
//! and the `top_k` most frequent with their share of all target events.
//!
//! * **Scope**: a target with a `session_id` looks only at earlier events of the same member and session.
//!   A target without a session looks at all earlier events of the member whose time is at most
//!   `lookback_secs` before it (inclusive), whatever their session.
//! * **Previous target**: a path stops at the previous target event in its scope, so each path describes
//!   what happened since the last purchase. Two purchases in a row give the second one the empty path,
//!   labelled `(direct)`.
//! * **Order**: events are sorted by time; at equal times non-target events come before targets (an event
//!   recorded in the same second as the purchase counts as leading to it), then by event type and session,
//!   so the result does not depend on input order.
//! * Ranking: by count, descending, then by path, lexicographically, for a stable order.
//!
//! # Complexity
//!
//! Per member: one sort, O(n log n); then every target walks back over its scope. A walk stops at the
//! previous target in its scope, so every event is walked over by at most the next session-scoped target
//! of its session and the next session-less target, O(n) in total; a per-member map gives each event the
//! previous event of its session, so walks never skip over other sessions. Rayon over members; one hash
//! map of paths per worker.

use super::{Event, NotGroupedByMember, member_runs};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Knobs of the path report. Defaults: target `purchase`, 4 steps, 24 h lookback for events without a
/// session, top 10.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PathParams {
    /// Event type whose paths are counted.
    pub target_event_type: String,
    /// Longest path kept, in collapsed steps (the last ones before the target).
    pub max_steps: usize,
    /// For targets without a session: how far back, in seconds, events are looked at.
    pub lookback_secs: i64,
    /// How many paths to return.
    pub top_k: usize,
}

impl Default for PathParams {
    fn default() -> Self {
        Self { target_event_type: "purchase".into(), max_steps: 4, lookback_secs: 24 * 3600, top_k: 10 }
    }
}

/// Why the paths could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A parameter that must be at least 1 was not.
    #[error("`{field}` must be positive, got {value}")]
    NonPositive {
        /// Offending field.
        field: &'static str,
        /// Value given.
        value: i64,
    },
    /// The target event type is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// Offending field.
        field: &'static str,
    },
    /// Input not grouped by member.
    #[error(transparent)]
    NotGrouped(#[from] NotGroupedByMember),
}

/// One path and how often it led to the target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathCount {
    /// Event types before the target, oldest first (empty: nothing before the target in its scope).
    pub steps: Vec<String>,
    /// `product_view → add_to_cart → purchase`; `(direct) → purchase` for the empty path.
    pub label: String,
    /// Target events with this path.
    pub count: u64,
    /// `count / target_events`.
    pub share: f64,
}

/// The path report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopPaths {
    /// Target events seen.
    pub target_events: u64,
    /// Different paths among them.
    pub distinct_paths: u64,
    /// The most frequent paths, at most `top_k`.
    pub paths: Vec<PathCount>,
}

const NONE: usize = usize::MAX;

/// Per-worker state.
struct Worker<'e> {
    counts: HashMap<Vec<&'e str>, u64>,
    targets: u64,
    keys: Vec<(i64, bool, usize)>,
    prev_same_session: Vec<usize>,
    last_in_session: HashMap<&'e str, usize>,
    path: Vec<&'e str>,
}

impl<'e> Worker<'e> {
    fn new() -> Self {
        Self {
            counts: HashMap::new(),
            targets: 0,
            keys: Vec::new(),
            prev_same_session: Vec::new(),
            last_in_session: HashMap::new(),
            path: Vec::new(),
        }
    }

    fn merge(mut self, o: Worker<'e>) -> Self {
        for (k, v) in o.counts {
            *self.counts.entry(k).or_insert(0) += v;
        }
        self.targets += o.targets;
        self
    }

    fn member(&mut self, run: &'e [Event], p: &PathParams, lookback_us: i64) {
        let target = p.target_event_type.as_str();
        let is_target = |e: &Event| e.event_type == target;
        // Sort keys computed once: the target test is a string comparison.
        self.keys.clear();
        self.keys.extend(run.iter().enumerate().map(|(i, e)| (e.at.timestamp_micros(), is_target(e), i)));
        self.keys.sort_unstable_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
                let (x, y) = (&run[a.2], &run[b.2]);
                (&x.event_type, &x.session_id).cmp(&(&y.event_type, &y.session_id))
            })
        });
        self.prev_same_session.clear();
        self.last_in_session.clear();
        for (pos, &(_, _, i)) in self.keys.iter().enumerate() {
            let prev = match &run[i].session_id {
                Some(s) => self.last_in_session.insert(s.as_str(), pos).unwrap_or(NONE),
                None => NONE,
            };
            self.prev_same_session.push(prev);
        }
        for pos in 0..self.keys.len() {
            let (t_at, t_is_target, t_idx) = self.keys[pos];
            if !t_is_target {
                continue;
            }
            self.targets += 1;
            self.path.clear();
            let in_session = run[t_idx].session_id.is_some();
            let earliest = t_at.saturating_sub(lookback_us);
            let mut cur = if in_session { self.prev_same_session[pos] } else { pos.checked_sub(1).unwrap_or(NONE) };
            while cur != NONE && self.path.len() < p.max_steps {
                let (at, is_tgt, idx) = self.keys[cur];
                if is_tgt || (!in_session && at < earliest) {
                    break;
                }
                let e = &run[idx];
                if self.path.last() != Some(&e.event_type.as_str()) {
                    self.path.push(&e.event_type);
                }
                cur = if in_session { self.prev_same_session[cur] } else { cur.checked_sub(1).unwrap_or(NONE) };
            }
            self.path.reverse();
            match self.counts.get_mut(self.path.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    self.counts.insert(self.path.clone(), 1);
                }
            }
        }
    }
}

/// Counts the paths leading to each target event and returns the most frequent ones.
///
/// Errors: parameters out of range (naming the field) or members not contiguous in `events`. Empty
/// input gives zero targets and no paths.
pub fn top_paths(events: &[Event], params: &PathParams) -> Result<TopPaths, PathError> {
    if params.target_event_type.trim().is_empty() {
        return Err(PathError::Empty { field: "target_event_type" });
    }
    for (field, value) in [
        ("max_steps", i64::try_from(params.max_steps).unwrap_or(i64::MAX)),
        ("lookback_secs", params.lookback_secs),
        ("top_k", i64::try_from(params.top_k).unwrap_or(i64::MAX)),
    ] {
        if value <= 0 {
            return Err(PathError::NonPositive { field, value });
        }
    }
    let runs = member_runs(events)?;
    let lookback_us = params.lookback_secs.saturating_mul(1_000_000);
    let w = runs
        .par_iter()
        .with_min_len(256)
        .fold(Worker::new, |mut w, r| {
            w.member(&events[r.clone()], params, lookback_us);
            w
        })
        .reduce(Worker::new, Worker::merge);

    let distinct_paths = w.counts.len() as u64;
    let mut all: Vec<(Vec<&str>, u64)> = w.counts.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(params.top_k);
    let paths = all
        .into_iter()
        .map(|(steps, count)| {
            let head = if steps.is_empty() { "(direct)".to_owned() } else { steps.join(" → ") };
            PathCount {
                label: format!("{head} → {}", params.target_event_type),
                steps: steps.into_iter().map(str::to_owned).collect(),
                count,
                share: count as f64 / w.targets as f64,
            }
        })
        .collect();
    Ok(TopPaths { target_events: w.targets, distinct_paths, paths })
}

#[cfg(test)]
mod tests;
