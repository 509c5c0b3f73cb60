//! Association rules from frequent itemsets, with mlxtend's metrics (see the module doc of [`super`]).

use std::collections::HashMap;

use rayon::prelude::*;

use super::{FrequentItemset, Rule};

/// Every split of every itemset of two or more items into antecedent ⇒ consequent that passes both
/// thresholds, strongest first. `itemsets` must be downward closed (every subset of an itemset present),
/// which the miner guarantees; a split whose side is missing is skipped.
pub(super) fn association_rules(
    itemsets: &[FrequentItemset],
    n_transactions: u64,
    min_confidence: f64,
    min_lift: f64,
) -> Vec<Rule> {
    let support: HashMap<&[u32], f64> = itemsets.iter().map(|s| (s.items.as_slice(), s.support)).collect();
    let nf = n_transactions as f64;
    let mut rules: Vec<Rule> = itemsets
        .par_iter()
        // A 64-item itemset would need 2^64 frequent subsets first: unreachable, but never shift past u64.
        .filter(|s| s.items.len() >= 2 && s.items.len() < 64)
        .flat_map_iter(|set| {
            let k = set.items.len();
            let s_ac = set.support;
            let mut out = Vec::new();
            let mut a = Vec::with_capacity(k);
            let mut c = Vec::with_capacity(k);
            for mask in 1..(1u64 << k) - 1 {
                a.clear();
                c.clear();
                for (i, &it) in set.items.iter().enumerate() {
                    if mask >> i & 1 == 1 { a.push(it) } else { c.push(it) }
                }
                let (Some(&s_a), Some(&s_c)) = (support.get(a.as_slice()), support.get(c.as_slice())) else {
                    continue;
                };
                // mlxtend: (sAC * (n - disAC)) / (sA * (n - disA) - dis_int) with no missing values.
                let confidence = (s_ac * nf) / (s_a * nf);
                if confidence < min_confidence {
                    continue;
                }
                let lift = confidence / s_c;
                if lift < min_lift {
                    continue;
                }
                out.push(Rule {
                    antecedent: a.clone(),
                    consequent: c.clone(),
                    count: set.count,
                    antecedent_support: s_a,
                    consequent_support: s_c,
                    support: s_ac,
                    confidence,
                    lift,
                    leverage: s_ac - s_a * s_c,
                    conviction: (confidence < 1.0).then(|| (1.0 - s_c) / (1.0 - confidence)),
                });
            }
            out
        })
        .collect();
    rules.par_sort_unstable_by(|x, y| {
        y.lift
            .total_cmp(&x.lift)
            .then(y.confidence.total_cmp(&x.confidence))
            .then(y.support.total_cmp(&x.support))
            .then_with(|| x.antecedent.cmp(&y.antecedent))
            .then_with(|| x.consequent.cmp(&y.consequent))
    });
    rules
}
