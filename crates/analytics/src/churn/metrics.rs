//! Ranking metrics for a binary classifier: ROC-AUC and PR-AUC (average precision).
//!
//! * **ROC-AUC** is the Mann–Whitney form: the probability that a randomly drawn positive scores higher
//!   than a randomly drawn negative, ties counting one half. Computed from average ranks (ties share the
//!   mean of the ranks they span): `AUC = (R₊ − n₊(n₊+1)/2) / (n₊·n₋)` where `R₊` is the rank sum of the
//!   positives (Hanley & McNeil 1982).
//! * **PR-AUC** is *average precision* as scikit-learn defines it: walking the distinct score thresholds
//!   from high to low, `AP = Σₖ (Rₖ − Rₖ₋₁)·Pₖ`, where `Pₖ`, `Rₖ` are precision and recall when every
//!   member scoring ≥ the k-th threshold is called positive. Tied scores enter together (one threshold),
//!   so the result does not depend on the input order. It is a step sum, not a trapezoid, so it does not
//!   overstate the area; a random ranking scores about the positive rate.
//!
//! Written here rather than taken from `linfa::metrics` because linfa's ROC works in `f32`, which merges
//! scores that differ by less than ~1e-7 into false ties, and linfa has no average precision.

use std::cmp::Ordering;

/// Why a ranking metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Scores and labels differ in length.
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch {
        /// Number of scores given.
        scores: usize,
        /// Number of labels given.
        labels: usize,
    },
    /// Both classes must be present for a ranking metric to mean anything.
    #[error("need both classes: {positives} positives, {negatives} negatives")]
    OneClass {
        /// Positives in the input.
        positives: usize,
        /// Negatives in the input.
        negatives: usize,
    },
    /// A score was NaN or infinite.
    #[error("score at position {0} is not finite")]
    NonFinite(usize),
}

fn check(scores: &[f64], labels: &[bool]) -> Result<(usize, usize), MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch { scores: scores.len(), labels: labels.len() });
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(MetricError::NonFinite(i));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(MetricError::OneClass { positives, negatives });
    }
    Ok((positives, negatives))
}

/// Indices sorted by score, descending (`total_cmp`; scores are finite after `check`).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// ROC-AUC by average ranks; ties count one half. Positives are `true` labels.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let (positives, negatives) = check(scores, labels)?;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks are 1-based; a tie group spanning ranks i+1..=j gets (i+1+j)/2.
    let mut rank_sum_pos = 0.0_f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && scores[idx[j]].total_cmp(&scores[idx[i]]) == Ordering::Equal {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos_in_group = idx[i..j].iter().filter(|&&k| labels[k]).count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
        i = j;
    }
    let np = positives as f64;
    let nn = negatives as f64;
    Ok((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn))
}

/// Average precision (PR-AUC as a step sum over distinct thresholds, see the module doc).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let (positives, _) = check(scores, labels)?;
    let idx = order_desc(scores);
    let total_pos = positives as f64;
    let (mut tp, mut fp) = (0_usize, 0_usize);
    let mut prev_recall = 0.0_f64;
    let mut ap = 0.0_f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]].total_cmp(&scores[idx[i]]) == Ordering::Equal {
            if labels[idx[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / total_pos;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        i = j;
    }
    Ok(ap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Oracle: the definition of AUC over all positive/negative pairs.
    fn brute_auc(scores: &[f64], labels: &[bool]) -> f64 {
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for (i, &si) in scores.iter().enumerate() {
            if !labels[i] {
                continue;
            }
            for (j, &sj) in scores.iter().enumerate() {
                if labels[j] {
                    continue;
                }
                pairs += 1.0;
                if si > sj {
                    wins += 1.0;
                } else if si == sj {
                    wins += 0.5;
                }
            }
        }
        wins / pairs
    }

    /// Oracle: average precision from its definition, one threshold at a time, O(n²).
    fn brute_ap(scores: &[f64], labels: &[bool]) -> f64 {
        let mut thresholds: Vec<f64> = scores.to_vec();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let total_pos = labels.iter().filter(|&&l| l).count() as f64;
        let mut prev_recall = 0.0;
        let mut ap = 0.0;
        for t in thresholds {
            let called: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] >= t).collect();
            let tp = called.iter().filter(|&&i| labels[i]).count() as f64;
            let recall = tp / total_pos;
            ap += (recall - prev_recall) * tp / called.len() as f64;
            prev_recall = recall;
        }
        ap
    }

    #[test]
    fn hand_computed_without_ties() {
        // The classic example from scikit-learn's docs: AUC 0.75, AP 0.8333.
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        assert_abs_diff_eq!(roc_auc(&s, &y).unwrap(), 0.75, epsilon = 1e-12);
        // Thresholds 0.8 (P=1, R=.5), 0.4 (P=.5, R=.5), 0.35 (P=2/3, R=1), 0.1.
        // AP = .5·1 + 0 + .5·2/3 = 0.83333…
        assert_abs_diff_eq!(average_precision(&s, &y).unwrap(), 0.5 + 0.5 * 2.0 / 3.0, epsilon = 1e-12);
    }

    #[test]
    fn hand_computed_with_ties() {
        // Positives 0.9, 0.5; negatives 0.5, 0.2.
        // Pairs: (0.9,0.5)=1, (0.9,0.2)=1, (0.5,0.5)=½, (0.5,0.2)=1 → 3.5/4.
        let s = [0.5, 0.5, 0.2, 0.9];
        let y = [true, false, false, true];
        assert_abs_diff_eq!(roc_auc(&s, &y).unwrap(), 0.875, epsilon = 1e-12);
        // Threshold 0.9: P=1, R=½. Threshold 0.5 (both tied enter together): P=2/3, R=1.
        // AP = ½·1 + ½·⅔ = 0.8333…, whatever order the tied pair is given in.
        let ap = average_precision(&s, &y).unwrap();
        assert_abs_diff_eq!(ap, 0.5 + 1.0 / 3.0, epsilon = 1e-12);
        let s2 = [0.5, 0.5, 0.2, 0.9];
        let y2 = [false, true, false, true];
        assert_abs_diff_eq!(average_precision(&s2, &y2).unwrap(), ap, epsilon = 1e-12);
        // All scores equal: AUC exactly ½, AP equals the positive rate.
        let flat = [0.3; 5];
        let yf = [true, false, false, true, false];
        assert_abs_diff_eq!(roc_auc(&flat, &yf).unwrap(), 0.5, epsilon = 1e-12);
        assert_abs_diff_eq!(average_precision(&flat, &yf).unwrap(), 0.4, epsilon = 1e-12);
        // Perfect and inverted rankings.
        let s3 = [0.9, 0.8, 0.2, 0.1];
        let y3 = [true, true, false, false];
        assert_abs_diff_eq!(roc_auc(&s3, &y3).unwrap(), 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(average_precision(&s3, &y3).unwrap(), 1.0, epsilon = 1e-12);
        let y4 = [false, false, true, true];
        assert_abs_diff_eq!(roc_auc(&s3, &y4).unwrap(), 0.0, epsilon = 1e-12);
        // Positives ranked last of four: thresholds give P = 1/3 at R=½, ½ at R=1.
        assert_abs_diff_eq!(average_precision(&s3, &y4).unwrap(), 0.5 / 3.0 + 0.5 * 0.5, epsilon = 1e-12);
    }

    #[test]
    fn agrees_with_brute_force_on_random_data_with_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for round in 0..50 {
            let n = rng.random_range(2..120);
            // Scores on a coarse grid so ties are common.
            let scores: Vec<f64> = (0..n).map(|_| f64::from(rng.random_range(0..12_u8)) / 10.0).collect();
            let mut labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.3)).collect();
            labels[0] = true;
            labels[1] = false;
            let auc = roc_auc(&scores, &labels).unwrap();
            assert_abs_diff_eq!(auc, brute_auc(&scores, &labels), epsilon = 1e-9);
            let ap = average_precision(&scores, &labels).unwrap();
            assert_abs_diff_eq!(ap, brute_ap(&scores, &labels), epsilon = 1e-9);
            assert!((0.0..=1.0).contains(&ap), "round {round}: ap {ap}");
        }
    }

    #[test]
    fn degenerate_inputs_are_typed_errors() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), Err(MetricError::OneClass { positives: 2, negatives: 0 }));
        assert_eq!(average_precision(&[], &[]), Err(MetricError::OneClass { positives: 0, negatives: 0 }));
        assert_eq!(roc_auc(&[0.1], &[true, false]), Err(MetricError::LengthMismatch { scores: 1, labels: 2 }));
        assert_eq!(average_precision(&[0.1, f64::NAN], &[true, false]), Err(MetricError::NonFinite(1)));
    }
}
