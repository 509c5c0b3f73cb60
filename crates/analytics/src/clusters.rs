//! Behaviour clusters (用户分群): k-means on standardized behaviour features, with each cluster described
//! in words a marketer reads ("frequent, high spend, buys on promotion").
//!
//! **Input.** A matrix of per-member features with names (e.g. recency, frequency, monetary, AOV,
//! discount share, category breadth, engagement), in their natural units.
//!
//! **Standardization.** Each feature becomes `z = (x − mean) / sd` (population sd over all rows). A
//! feature with zero variance carries no information: its z is 0 everywhere, so it neither moves the
//! clustering nor appears in a description; it is still reported with `sd = 0`.
//!
//! **Choosing k.** For each k in `k_min..=k_max`, k-means (k-means++ seeding, `n_runs` restarts, Lloyd
//! iterations; `linfa-clustering`) is fitted on a seeded random sample of at most `selection_sample`
//! rows (default 10,000), and the mean silhouette (Rousseeuw 1987) of that sample is computed:
//! `s(i) = (b − a) / max(a, b)` with `a` the mean distance from `i` to the rest of its cluster and `b`
//! the smallest mean distance to another cluster; `s(i) = 0` when `i` is alone in its cluster. The k
//! with the highest mean silhouette wins (ties: the smaller k). k is capped at the number of distinct
//! sampled rows and at sample size − 1, where the silhouette stops being defined.
//!
//! **Final fit.** Lloyd's algorithm on all rows, started from the chosen k's sample centroids (already
//! the best of `n_runs` restarts), so the full pass only refines them. Linfa's update is "m_k-means"
//! (each old centroid counts as one extra point, which prevents empty clusters); after convergence every
//! member is assigned to its nearest centroid and each cluster's centroid is reported as the exact mean
//! of its members. Clusters are numbered by size, largest first. Clusters left empty by the final
//! assignment are dropped. Full-batch Lloyd is kept (rather than mini-batch k-means) because, started
//! from the sample's centroids, it needs few passes: about a second on 1,000,000 × 7 rows (see
//! `benches/models.rs`), and it gives exact rather than approximate centroids.
//!
//! **Description.** From the centroid's z-scores: a feature is a trait when `z > +threshold` (the
//! feature's "high" word) or `z < −threshold` ("low" word), threshold 0.5 by default; up to
//! `max_traits` traits, strongest |z| first. Words come from a table per feature name (overridable);
//! an unknown feature reads "high <name>" / "low <name>".
//!
//! Everything is deterministic for a given `seed`.
//!
//! References: Arthur & Vassilvitskii (2007) k-means++; Rousseeuw (1987) silhouettes, J. Comput. Appl.
//! Math. 20:53–65.

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng as _;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Per-member features to cluster: `values` is row-major, one row of `feature_names.len()` values per
/// entry of `member_ids`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInput {
    /// Feature names, matched against the description words table.
    pub feature_names: Vec<String>,
    /// One member per row.
    pub member_ids: Vec<i64>,
    /// Row-major feature values in natural units.
    pub values: Vec<f64>,
}

/// The words describing a feature that is high or low in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureWords {
    /// Feature name as given in [`ClusterInput::feature_names`].
    pub feature: String,
    /// Word when the cluster is above average (z > threshold).
    pub high: String,
    /// Word when the cluster is below average (z < −threshold).
    pub low: String,
}

fn words(feature: &str, high: &str, low: &str) -> FeatureWords {
    FeatureWords { feature: feature.into(), high: high.into(), low: low.into() }
}

/// The built-in words for the usual behaviour features.
pub fn default_feature_words() -> Vec<FeatureWords> {
    vec![
        words("recency", "lapsed", "recently active"),
        words("frequency", "frequent", "infrequent"),
        words("monetary", "high spend", "low spend"),
        words("aov", "big baskets", "small baskets"),
        words("discount_share", "buys on promotion", "pays full price"),
        words("category_breadth", "shops many categories", "sticks to few categories"),
        words("engagement", "highly engaged", "rarely engaged"),
        words("tenure", "long-standing", "new"),
        words("refund_share", "often refunds", "rarely refunds"),
    ]
}

/// Settings for clustering. Defaults: k chosen in 2..=8 on a 10,000-row sample, 4 k-means++ restarts,
/// up to 300 Lloyd iterations, tolerance 1e-4, traits at |z| > 0.5, at most 3 traits, seed 42.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterParams {
    /// A fixed k, skipping the silhouette selection.
    pub k: Option<usize>,
    /// Smallest k tried (at least 2).
    pub k_min: usize,
    /// Largest k tried.
    pub k_max: usize,
    /// Rows sampled (seeded) for choosing k and for the restarts.
    pub selection_sample: usize,
    /// k-means++ restarts on the sample; the lowest-inertia run is kept.
    pub n_runs: usize,
    /// Lloyd iteration cap per run.
    pub max_iterations: u64,
    /// Stop when the centroids move less than this (standardized units, Frobenius norm).
    pub tolerance: f64,
    /// |z| above which a centroid's feature becomes a trait.
    pub trait_threshold: f64,
    /// Traits per description.
    pub max_traits: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Description words per feature name.
    pub words: Vec<FeatureWords>,
}

impl Default for ClusterParams {
    fn default() -> Self {
        Self {
            k: None,
            k_min: 2,
            k_max: 8,
            selection_sample: 10_000,
            n_runs: 4,
            max_iterations: 300,
            tolerance: 1e-4,
            trait_threshold: 0.5,
            max_traits: 3,
            seed: 42,
            words: default_feature_words(),
        }
    }
}

/// Why clustering could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// A parameter is out of range.
    #[error("invalid cluster parameter: {0}")]
    InvalidParams(String),
    /// No feature columns.
    #[error("no features to cluster on")]
    NoFeatures,
    /// `values` is not `member_ids × feature_names` long.
    #[error("{values} values for {rows} members × {features} features")]
    ShapeMismatch {
        /// Length of `values`.
        values: usize,
        /// Number of members.
        rows: usize,
        /// Number of features.
        features: usize,
    },
    /// A value is NaN or infinite.
    #[error("value for member row {row}, feature {feature:?} is not finite")]
    NonFinite {
        /// Row index.
        row: usize,
        /// Feature name.
        feature: String,
    },
    /// Fewer rows than the clustering needs.
    #[error("{rows} rows; need at least {needed}")]
    TooFewRows {
        /// Rows given (or sampled).
        rows: usize,
        /// Rows needed.
        needed: usize,
    },
    /// Too few distinct rows to form the requested clusters (e.g. every feature constant).
    #[error("only {distinct} distinct rows; need at least {needed}")]
    TooFewDistinctRows {
        /// Distinct standardized rows found (counting stops at `needed`).
        distinct: usize,
        /// Distinct rows needed.
        needed: usize,
    },
    /// The k-means library failed.
    #[error("k-means failed: {0}")]
    KMeans(String),
}

/// A feature's standardization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureScale {
    /// Feature name.
    pub feature: String,
    /// Mean over all rows.
    pub mean: f64,
    /// Population standard deviation; 0 means constant (ignored by the clustering).
    pub sd: f64,
}

/// The mean silhouette obtained for one k on the selection sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KSilhouette {
    /// Number of clusters tried.
    pub k: usize,
    /// Mean silhouette on the sample, in [−1, 1].
    pub silhouette: f64,
}

/// A feature that sets a cluster apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterTrait {
    /// Feature name.
    pub feature: String,
    /// Centroid z-score.
    pub z: f64,
    /// The word used in the description.
    pub word: String,
}

/// One cluster: who, how many, where its centre is and what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// Cluster id, 0 = largest.
    pub id: usize,
    /// Members in the cluster.
    pub size: usize,
    /// Share of all members.
    pub share: f64,
    /// Mean of each feature over the members, in the input's units.
    pub centroid: Vec<f64>,
    /// The same mean as z-scores (0 for constant features).
    pub centroid_z: Vec<f64>,
    /// Distinguishing traits, strongest first.
    pub traits: Vec<ClusterTrait>,
    /// The traits' words joined, e.g. "frequent, high spend, buys on promotion".
    pub description: String,
}

/// A member's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterAssignment {
    /// The member.
    pub member_id: i64,
    /// Cluster id (see [`ClusterSummary::id`]).
    pub cluster: usize,
    /// Euclidean distance to the cluster centroid in standardized units (how typical the member is).
    pub distance: f64,
}

/// The clustering: scales, how k was chosen, clusters and members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterResult {
    /// Number of clusters.
    pub k: usize,
    /// Silhouette per k tried (empty when k was fixed).
    pub selection: Vec<KSilhouette>,
    /// Rows in the selection sample.
    pub sample_rows: usize,
    /// Standardization per feature.
    pub features: Vec<FeatureScale>,
    /// Clusters, largest first.
    pub clusters: Vec<ClusterSummary>,
    /// One per input row, in input order.
    pub assignments: Vec<ClusterAssignment>,
    /// Mean squared standardized distance to the own centroid.
    pub inertia: f64,
}

fn validate(input: &ClusterInput, p: &ClusterParams) -> Result<(), ClusterError> {
    let bad = |m: &str| Err(ClusterError::InvalidParams(m.to_owned()));
    if p.k_min < 2 || p.k_max < p.k_min {
        return bad("need 2 <= k_min <= k_max");
    }
    if p.k.is_some_and(|k| k < 1) {
        return bad("k must be at least 1");
    }
    if p.selection_sample < 3 {
        return bad("selection_sample must be at least 3");
    }
    if p.n_runs == 0 || p.max_iterations == 0 {
        return bad("n_runs and max_iterations must be at least 1");
    }
    if !(p.tolerance.is_finite() && p.tolerance > 0.0) {
        return bad("tolerance must be finite and > 0");
    }
    if !(p.trait_threshold.is_finite() && p.trait_threshold >= 0.0) {
        return bad("trait_threshold must be finite and >= 0");
    }
    let d = input.feature_names.len();
    if d == 0 {
        return Err(ClusterError::NoFeatures);
    }
    let n = input.member_ids.len();
    if n.checked_mul(d) != Some(input.values.len()) {
        return Err(ClusterError::ShapeMismatch { values: input.values.len(), rows: n, features: d });
    }
    if let Some(i) = input.values.iter().position(|v| !v.is_finite()) {
        return Err(ClusterError::NonFinite { row: i / d, feature: input.feature_names[i % d].clone() });
    }
    Ok(())
}

/// Column means and population sds; sd 0 for (numerically) constant columns.
fn scales(x: &ArrayView2<f64>, names: &[String]) -> Vec<FeatureScale> {
    let n = x.nrows() as f64;
    x.columns()
        .into_iter()
        .zip(names)
        .map(|(col, name)| {
            let mean = col.sum() / n;
            let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let sd = var.sqrt();
            let sd = if sd.is_finite() && sd > 1e-12 * (1.0 + mean.abs()) { sd } else { 0.0 };
            FeatureScale { feature: name.clone(), mean, sd }
        })
        .collect()
}

/// Counts distinct rows, stopping once `cap` are found.
fn distinct_rows(z: &ArrayView2<f64>, cap: usize) -> usize {
    let mut seen: HashSet<Vec<u64>> = HashSet::new();
    for row in z.rows() {
        // +0.0 and −0.0 are the same point.
        seen.insert(row.iter().map(|v| (v + 0.0).to_bits()).collect());
        if seen.len() >= cap {
            break;
        }
    }
    seen.len()
}

/// Mean silhouette of a labelling (Euclidean), with `s(i) = 0` for members alone in their cluster.
///
/// Written here rather than taken from `linfa::metrics::SilhouetteScore` because linfa's version is
/// single-threaded, allocates two arrays per pair of points (tens of seconds per k on 10,000 rows),
/// and scores a singleton cluster's point as 1 instead of Rousseeuw's 0, which would favour larger k.
/// The tests check it against linfa's where the two definitions agree.
pub(crate) fn silhouette(x: &ArrayView2<f64>, labels: &[usize], k: usize) -> f64 {
    let n = x.nrows();
    if n < 2 {
        return 0.0;
    }
    let d = x.ncols();
    let flat: Vec<f64> = x.iter().copied().collect();
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    // Per-point values are collected in order and summed sequentially: a parallel float sum would
    // depend on how rayon splits the work and break run-to-run determinism.
    let per_point: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let own = labels[i];
            if counts[own] <= 1 {
                return 0.0;
            }
            let xi = &flat[i * d..(i + 1) * d];
            let mut sums = vec![0.0_f64; k];
            for (j, xj) in flat.chunks_exact(d).enumerate() {
                let sq: f64 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
                sums[labels[j]] += sq.sqrt();
            }
            let a = sums[own] / (counts[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && counts[c] > 0)
                .map(|c| sums[c] / counts[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if !b.is_finite() {
                return 0.0;
            }
            let m = a.max(b);
            if m > 0.0 { (b - a) / m } else { 0.0 }
        })
        .collect();
    per_point.iter().sum::<f64>() / n as f64
}

fn kmeans_rng(seed: u64, k: usize) -> Xoshiro256Plus {
    Xoshiro256Plus::seed_from_u64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// k-means on the sample with restarts; returns centroids and labels.
fn fit_sample(sample: &Array2<f64>, k: usize, p: &ClusterParams) -> Result<(Array2<f64>, Array1<usize>), ClusterError> {
    let ds = DatasetBase::from(sample.clone());
    let model = KMeans::params_with_rng(k, kmeans_rng(p.seed, k))
        .n_runs(p.n_runs)
        .tolerance(p.tolerance)
        .max_n_iterations(p.max_iterations)
        .fit(&ds)
        .map_err(|e| ClusterError::KMeans(e.to_string()))?;
    let labels = model.predict(sample);
    Ok((model.centroids().clone(), labels))
}

/// Words for one centroid: features beyond ±threshold, strongest |z| first, at most `max_traits`.
pub fn describe_centroid(
    centroid_z: &[f64],
    feature_names: &[String],
    table: &[FeatureWords],
    threshold: f64,
    max_traits: usize,
) -> (Vec<ClusterTrait>, String) {
    let mut idx: Vec<usize> =
        (0..centroid_z.len().min(feature_names.len())).filter(|&i| centroid_z[i].abs() > threshold).collect();
    idx.sort_by(|&a, &b| centroid_z[b].abs().total_cmp(&centroid_z[a].abs()).then(a.cmp(&b)));
    let traits: Vec<ClusterTrait> = idx
        .into_iter()
        .take(max_traits)
        .map(|i| {
            let name = &feature_names[i];
            let high = centroid_z[i] > 0.0;
            let word = match table.iter().find(|w| &w.feature == name) {
                Some(w) if high => w.high.clone(),
                Some(w) => w.low.clone(),
                None if high => format!("high {name}"),
                None => format!("low {name}"),
            };
            ClusterTrait { feature: name.clone(), z: centroid_z[i], word }
        })
        .collect();
    let description = if traits.is_empty() {
        "average on every feature".to_owned()
    } else {
        traits.iter().map(|t| t.word.as_str()).collect::<Vec<_>>().join(", ")
    };
    (traits, description)
}

/// Clusters members on their behaviour features: chooses k by silhouette on a sample (unless fixed),
/// fits k-means on all rows, and describes each cluster.
pub fn cluster(input: &ClusterInput, params: &ClusterParams) -> Result<ClusterResult, ClusterError> {
    validate(input, params)?;
    let d = input.feature_names.len();
    let n = input.member_ids.len();
    let raw = ArrayView2::from_shape((n, d), &input.values).map_err(|_| ClusterError::ShapeMismatch {
        values: input.values.len(),
        rows: n,
        features: d,
    })?;
    let min_k = params.k.unwrap_or(params.k_min);
    if n < min_k.max(2) {
        return Err(ClusterError::TooFewRows { rows: n, needed: min_k.max(2) });
    }
    let features = scales(&raw, &input.feature_names);
    let mut z = raw.to_owned();
    for (mut col, s) in z.columns_mut().into_iter().zip(&features) {
        col.mapv_inplace(|v| if s.sd > 0.0 { (v - s.mean) / s.sd } else { 0.0 });
    }

    // Seeded sample for selection and restarts (sorted indices: stable memory order).
    let m = n.min(params.selection_sample);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut rows = rand::seq::index::sample(&mut rng, n, m).into_vec();
    rows.sort_unstable();
    let sample = z.select(Axis(0), &rows);

    let (k, selection, init) = match params.k {
        Some(k) => {
            let distinct = distinct_rows(&z.view(), k);
            if distinct < k {
                return Err(ClusterError::TooFewDistinctRows { distinct, needed: k });
            }
            // Restarts on the sample when it holds enough distinct points, else on all rows.
            let base = if distinct_rows(&sample.view(), k) >= k { &sample } else { &z };
            let (centroids, _) = fit_sample(base, k, params)?;
            (k, Vec::new(), centroids)
        }
        None => {
            let distinct = distinct_rows(&sample.view(), params.k_max + 1);
            // Silhouette needs 2 <= k <= m − 1, and k-means needs k distinct points.
            let k_hi = params.k_max.min(m.saturating_sub(1)).min(distinct);
            if m < params.k_min + 1 {
                return Err(ClusterError::TooFewRows { rows: m, needed: params.k_min + 1 });
            }
            if k_hi < params.k_min {
                return Err(ClusterError::TooFewDistinctRows { distinct, needed: params.k_min });
            }
            let mut selection = Vec::new();
            let mut best: Option<(usize, f64, Array2<f64>)> = None;
            for k in params.k_min..=k_hi {
                let (centroids, labels) = fit_sample(&sample, k, params)?;
                let s = silhouette(&sample.view(), &labels.to_vec(), k);
                selection.push(KSilhouette { k, silhouette: s });
                if best.as_ref().is_none_or(|b| s > b.1) {
                    best = Some((k, s, centroids));
                }
            }
            let (k, _, centroids) = best.ok_or(ClusterError::TooFewDistinctRows { distinct, needed: params.k_min })?;
            (k, selection, centroids)
        }
    };

    // Refine on all rows from the sample's best centroids.
    let ds = DatasetBase::from(z.view());
    let model = KMeans::params_with_rng(k, kmeans_rng(params.seed, k))
        .init_method(KMeansInit::Precomputed(init))
        .n_runs(1)
        .tolerance(params.tolerance)
        .max_n_iterations(params.max_iterations)
        .fit(&ds)
        .map_err(|e| ClusterError::KMeans(e.to_string()))?;
    let labels: Vec<usize> = model.predict(&z).to_vec();

    // Exact member means per cluster, in z and in raw units.
    let mut count = vec![0usize; k];
    let mut sum_z = Array2::<f64>::zeros((k, d));
    let mut sum_raw = Array2::<f64>::zeros((k, d));
    for ((zr, rr), &l) in z.rows().into_iter().zip(raw.rows()).zip(&labels) {
        count[l] += 1;
        let mut sz = sum_z.row_mut(l);
        sz += &zr;
        let mut sr = sum_raw.row_mut(l);
        sr += &rr;
    }
    // Non-empty clusters, largest first; old label -> new id.
    let mut order: Vec<usize> = (0..k).filter(|&c| count[c] > 0).collect();
    order.sort_by(|&a, &b| count[b].cmp(&count[a]).then(a.cmp(&b)));
    let mut new_id = vec![usize::MAX; k];
    for (id, &c) in order.iter().enumerate() {
        new_id[c] = id;
    }
    let centroid_z: Vec<Vec<f64>> = (0..k)
        .map(|c| {
            let cnt = count[c].max(1) as f64;
            sum_z.row(c).iter().map(|v| v / cnt).collect()
        })
        .collect();

    let assignments: Vec<ClusterAssignment> = z
        .axis_iter(Axis(0))
        .into_par_iter()
        .zip(labels.par_iter())
        .zip(input.member_ids.par_iter())
        .map(|((row, &l), &member_id)| {
            let sq: f64 = row.iter().zip(&centroid_z[l]).map(|(a, b)| (a - b) * (a - b)).sum();
            ClusterAssignment { member_id, cluster: new_id[l], distance: sq.sqrt() }
        })
        .collect();
    let inertia = assignments.iter().map(|a| a.distance * a.distance).sum::<f64>() / n as f64;

    let clusters = order
        .iter()
        .enumerate()
        .map(|(id, &c)| {
            let cnt = count[c] as f64;
            let centroid: Vec<f64> = sum_raw.row(c).iter().map(|v| v / cnt).collect();
            let (traits, description) = describe_centroid(
                &centroid_z[c],
                &input.feature_names,
                &params.words,
                params.trait_threshold,
                params.max_traits,
            );
            ClusterSummary {
                id,
                size: count[c],
                share: cnt / n as f64,
                centroid,
                centroid_z: centroid_z[c].clone(),
                traits,
                description,
            }
        })
        .collect::<Vec<_>>();

    Ok(ClusterResult { k: clusters.len(), selection, sample_rows: m, features, clusters, assignments, inertia })
}

#[cfg(test)]
mod tests;
