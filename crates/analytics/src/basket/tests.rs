use super::*;
use proptest::prelude::*;

/// Brute force: every combination of the items present, counted by scanning every basket.
fn oracle_itemsets(tx: &[Vec<u32>], min_count: u64, max_len: usize) -> Vec<FrequentItemset> {
    let baskets: Vec<Vec<u32>> = tx
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort_unstable();
            t.dedup();
            t
        })
        .collect();
    let mut items: Vec<u32> = baskets.iter().flatten().copied().collect();
    items.sort_unstable();
    items.dedup();
    assert!(items.len() < 16, "oracle is exponential");
    let count = |set: &[u32]| baskets.iter().filter(|b| set.iter().all(|i| b.contains(i))).count() as u64;
    let mut out = Vec::new();
    for mask in 1u32..(1 << items.len()) {
        let set: Vec<u32> = (0..items.len()).filter(|&i| mask >> i & 1 == 1).map(|i| items[i]).collect();
        if set.len() > max_len {
            continue;
        }
        let c = count(&set);
        if c >= min_count {
            out.push(FrequentItemset { items: set, count: c, support: c as f64 / tx.len() as f64 });
        }
    }
    out.sort_by(|a, b| a.items.len().cmp(&b.items.len()).then_with(|| a.items.cmp(&b.items)));
    out
}

/// Brute-force rules: every split of every frequent itemset, each side counted by scanning; metrics by
/// mlxtend's formulas. Sorted by (antecedent, consequent).
fn oracle_rules(tx: &[Vec<u32>], itemsets: &[FrequentItemset], min_conf: f64, min_lift: f64) -> Vec<Rule> {
    let n = tx.len() as f64;
    let supp = |set: &[u32]| tx.iter().filter(|t| set.iter().all(|i| t.contains(i))).count() as f64 / n;
    let mut out = Vec::new();
    for s in itemsets.iter().filter(|s| s.items.len() >= 2) {
        let k = s.items.len();
        for mask in 1u32..(1 << k) - 1 {
            let a: Vec<u32> = (0..k).filter(|&i| mask >> i & 1 == 1).map(|i| s.items[i]).collect();
            let c: Vec<u32> = (0..k).filter(|&i| mask >> i & 1 == 0).map(|i| s.items[i]).collect();
            let (s_ac, s_a, s_c) = (supp(&s.items), supp(&a), supp(&c));
            let confidence = (s_ac * n) / (s_a * n);
            let lift = confidence / s_c;
            if confidence >= min_conf && lift >= min_lift {
                out.push(Rule {
                    antecedent: a,
                    consequent: c,
                    count: s.count,
                    antecedent_support: s_a,
                    consequent_support: s_c,
                    support: s_ac,
                    confidence,
                    lift,
                    leverage: s_ac - s_a * s_c,
                    conviction: if confidence < 1.0 { Some((1.0 - s_c) / (1.0 - confidence)) } else { None },
                });
            }
        }
    }
    out.sort_by(|x, y| x.antecedent.cmp(&y.antecedent).then_with(|| x.consequent.cmp(&y.consequent)));
    out
}

fn by_sides(rules: &[Rule]) -> Vec<Rule> {
    let mut r = rules.to_vec();
    r.sort_by(|x, y| x.antecedent.cmp(&y.antecedent).then_with(|| x.consequent.cmp(&y.consequent)));
    r
}

fn params(min_count: u64, max_len: Option<usize>, min_confidence: f64, min_lift: f64) -> BasketParams {
    BasketParams { min_count: Some(min_count), max_len, min_confidence, min_lift, ..BasketParams::default() }
}

fn assert_rules_equal(got: &[Rule], want: &[Rule]) {
    let got = by_sides(got);
    assert_eq!(got.len(), want.len(), "rule count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.antecedent, &g.consequent, g.count), (&w.antecedent, &w.consequent, w.count));
        for (x, y) in [
            (g.antecedent_support, w.antecedent_support),
            (g.consequent_support, w.consequent_support),
            (g.support, w.support),
            (g.confidence, w.confidence),
            (g.lift, w.lift),
            (g.leverage, w.leverage),
        ] {
            assert!((x - y).abs() <= 1e-12, "{g:?} vs {w:?}");
        }
        match (g.conviction, w.conviction) {
            (None, None) => {}
            (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{g:?} vs {w:?}"),
            _ => panic!("conviction differs: {g:?} vs {w:?}"),
        }
    }
}

fn baskets(strs: &[&[&str]]) -> (ItemDictionary, Vec<Vec<u32>>) {
    let b: Vec<Vec<&str>> = strs.iter().map(|t| t.to_vec()).collect();
    ItemDictionary::from_baskets(&b).unwrap()
}

fn named(dict: &ItemDictionary, ids: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = dict.keys(ids).unwrap().into_iter().map(String::from).collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fpgrowth_matches_brute_force(
        tx in prop::collection::vec(prop::collection::vec(0u32..9, 0..7), 0..40),
        min_count in 1u64..5,
        max_len in prop::option::of(1usize..4),
        min_conf in prop::sample::select(vec![0.0, 0.3, 0.5, 0.75, 1.0]),
        min_lift in prop::sample::select(vec![0.0, 1.0, 1.2, 2.0]),
        sparse in any::<bool>(),
    ) {
        // Large, scattered ids exercise the hashed id index.
        let tx: Vec<Vec<u32>> = if sparse {
            tx.iter().map(|t| t.iter().map(|&i| 4_000_000_000 - i * 123_456_789).collect()).collect()
        } else {
            tx
        };
        let got = mine(&tx, &params(min_count, max_len, min_conf, min_lift)).unwrap();
        let mut flat = FlatBaskets::new();
        for t in &tx {
            flat.push(t.iter().copied());
        }
        let from_flat = mine_flat(flat, &params(min_count, max_len, min_conf, min_lift)).unwrap();
        prop_assert_eq!(&from_flat.itemsets, &got.itemsets);
        prop_assert_eq!(from_flat.rules.len(), got.rules.len());
        let want = oracle_itemsets(&tx, min_count, max_len.unwrap_or(usize::MAX));
        prop_assert_eq!(got.n_transactions, tx.len() as u64);
        prop_assert_eq!(&got.itemsets, &want);
        assert_rules_equal(&got.rules, &oracle_rules(&tx, &want, min_conf, min_lift));
    }

    #[test]
    fn fraction_threshold_is_ceil_of_support_times_n(
        tx in prop::collection::vec(prop::collection::vec(0u32..6, 1..5), 1..30),
        min_support in 0.01f64..1.0,
    ) {
        let p = BasketParams { min_support, max_len: None, ..BasketParams::default() };
        let got = mine(&tx, &p).unwrap();
        let min_count = (min_support * tx.len() as f64).ceil() as u64;
        prop_assert_eq!(got.min_count, min_count);
        prop_assert_eq!(got.itemsets, oracle_itemsets(&tx, min_count, usize::MAX));
    }
}

/// Han, Pei & Yin (2000), Table 1, minimum support 3 of 5: the paper's frequent patterns.
#[test]
fn han_pei_yin_example() {
    let (dict, tx) = baskets(&[
        &["f", "a", "c", "d", "g", "i", "m", "p"],
        &["a", "b", "c", "f", "l", "m", "o"],
        &["b", "f", "h", "j", "o"],
        &["b", "c", "k", "s", "p"],
        &["a", "f", "c", "e", "l", "p", "m", "n"],
    ]);
    let got = mine(&tx, &params(3, None, 0.0, 0.0)).unwrap();
    let mut found: Vec<(String, u64)> =
        got.itemsets.iter().map(|s| (named(&dict, &s.items).concat(), s.count)).collect();
    found.sort();
    let mut want: Vec<(String, u64)> = vec![("f", 4), ("c", 4), ("a", 3), ("b", 3), ("m", 3), ("p", 3), ("cp", 3)]
        .into_iter()
        .map(|(s, c)| (s.to_string(), c))
        .collect();
    // Every non-empty subset of {f, c, a, m} other than the singletons f:4 and c:4 already listed has count 3.
    for mask in 1u32..16 {
        let s: String =
            ["a", "c", "f", "m"].iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, s)| *s).collect();
        if s.len() >= 2 {
            want.push((s, 3));
        }
    }
    want.sort();
    assert_eq!(found, want);
    assert_eq!(got.itemsets.len(), 18);
    // f ⇒ c: supp(fc) = 3/5, supp(f) = supp(c) = 4/5, so confidence 3/4, lift 15/16 (below 1).
    let fc = got.rules.iter().find(|r| named(&dict, &r.antecedent) == ["f"] && named(&dict, &r.consequent) == ["c"]);
    let fc = fc.unwrap();
    assert!((fc.confidence - 0.75).abs() < 1e-12 && (fc.lift - 0.9375).abs() < 1e-12);
    assert!((fc.leverage - (0.6 - 0.64)).abs() < 1e-12);
    assert!((fc.conviction.unwrap() - 0.8).abs() < 1e-12); // (1 - 0.8) / (1 - 0.75)
    // The default lift floor of 1 drops it.
    let default_lift = mine(&tx, &params(3, None, 0.0, 1.0)).unwrap();
    assert!(default_lift.rules.iter().all(|r| r.lift >= 1.0));
    assert!(default_lift.rules.len() < got.rules.len());
}

/// mlxtend's documentation example, as mlxtend 0.25.0 `fpgrowth(min_support=0.6)` and
/// `association_rules(metric="confidence", min_threshold=0.7)` print it. The last basket lists Onion twice.
#[test]
fn mlxtend_documentation_example() {
    let (dict, tx) = baskets(&[
        &["Milk", "Onion", "Nutmeg", "Kidney Beans", "Eggs", "Yogurt"],
        &["Dill", "Onion", "Nutmeg", "Kidney Beans", "Eggs", "Yogurt"],
        &["Milk", "Apple", "Kidney Beans", "Eggs"],
        &["Milk", "Unicorn", "Corn", "Kidney Beans", "Yogurt"],
        &["Corn", "Onion", "Onion", "Kidney Beans", "Ice cream", "Eggs"],
    ]);
    let p = BasketParams { min_support: 0.6, min_confidence: 0.7, min_lift: 0.0, max_len: None, ..Default::default() };
    let got = mine(&tx, &p).unwrap();
    let mut sets: Vec<(Vec<String>, f64)> = got.itemsets.iter().map(|s| (named(&dict, &s.items), s.support)).collect();
    sets.sort_by(|a, b| a.0.cmp(&b.0));
    let want_sets: Vec<(&[&str], f64)> = vec![
        (&["Eggs"], 0.8),
        (&["Eggs", "Kidney Beans"], 0.8),
        (&["Eggs", "Kidney Beans", "Onion"], 0.6),
        (&["Eggs", "Onion"], 0.6),
        (&["Kidney Beans"], 1.0),
        (&["Kidney Beans", "Milk"], 0.6),
        (&["Kidney Beans", "Onion"], 0.6),
        (&["Kidney Beans", "Yogurt"], 0.6),
        (&["Milk"], 0.6),
        (&["Onion"], 0.6),
        (&["Yogurt"], 0.6),
    ];
    assert_eq!(sets.len(), want_sets.len());
    for ((g, gs), (w, ws)) in sets.iter().zip(&want_sets) {
        assert_eq!(g, w);
        assert!((gs - ws).abs() < 1e-12);
    }
    // antecedent, consequent, antecedent support, consequent support, support, confidence, lift, leverage,
    // conviction (None = inf)
    type Row<'a> = (&'a [&'a str], &'a [&'a str], [f64; 6], Option<f64>);
    let want: Vec<Row> = vec![
        (&["Eggs"], &["Kidney Beans"], [0.8, 1.0, 0.8, 1.0, 1.0, 0.0], None),
        (&["Kidney Beans"], &["Eggs"], [1.0, 0.8, 0.8, 0.8, 1.0, 0.0], Some(1.0)),
        (&["Yogurt"], &["Kidney Beans"], [0.6, 1.0, 0.6, 1.0, 1.0, 0.0], None),
        (&["Milk"], &["Kidney Beans"], [0.6, 1.0, 0.6, 1.0, 1.0, 0.0], None),
        (&["Eggs"], &["Onion"], [0.8, 0.6, 0.6, 0.75, 1.25, 0.12], Some(1.6)),
        (&["Onion"], &["Eggs"], [0.6, 0.8, 0.6, 1.0, 1.25, 0.12], None),
        (&["Onion"], &["Kidney Beans"], [0.6, 1.0, 0.6, 1.0, 1.0, 0.0], None),
        (&["Eggs", "Kidney Beans"], &["Onion"], [0.8, 0.6, 0.6, 0.75, 1.25, 0.12], Some(1.6)),
        (&["Eggs", "Onion"], &["Kidney Beans"], [0.6, 1.0, 0.6, 1.0, 1.0, 0.0], None),
        (&["Kidney Beans", "Onion"], &["Eggs"], [0.6, 0.8, 0.6, 1.0, 1.25, 0.12], None),
        (&["Eggs"], &["Kidney Beans", "Onion"], [0.8, 0.6, 0.6, 0.75, 1.25, 0.12], Some(1.6)),
        (&["Onion"], &["Eggs", "Kidney Beans"], [0.6, 0.8, 0.6, 1.0, 1.25, 0.12], None),
    ];
    assert_eq!(got.rules.len(), want.len());
    for (a, c, m, conv) in want {
        let r = got
            .rules
            .iter()
            .find(|r| named(&dict, &r.antecedent) == a && named(&dict, &r.consequent) == c)
            .unwrap_or_else(|| panic!("missing rule {a:?} => {c:?}"));
        let g = [r.antecedent_support, r.consequent_support, r.support, r.confidence, r.lift, r.leverage];
        for (x, y) in g.iter().zip(m) {
            assert!((x - y).abs() < 1e-12, "{a:?} => {c:?}: {g:?}");
        }
        match (r.conviction, conv) {
            (None, None) => {}
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-12),
            other => panic!("{a:?} => {c:?}: conviction {other:?}"),
        }
    }
    // Strongest first: lift 1.25 with confidence 1 leads, ties broken by antecedent ids (= SKU order).
    assert!(got.rules.windows(2).all(|w| w[0].lift >= w[1].lift));
    let first: Vec<String> = got.rules[..3].iter().map(|r| dict.describe(r)).collect();
    assert_eq!(first[0], "{Kidney Beans, Onion} ⇒ {Eggs} (support 0.6000, confidence 1.000, lift 1.25)");
    assert!(first[1].starts_with("{Onion} ⇒ {Eggs}") && first[2].starts_with("{Onion} ⇒ {Eggs, Kidney Beans}"));
}

#[test]
fn empty_input_gives_empty_result() {
    let got = mine(&[], &BasketParams::default()).unwrap();
    assert_eq!(got.n_transactions, 0);
    assert!(got.itemsets.is_empty() && got.rules.is_empty());
    // Baskets with no items count in n but yield nothing.
    let got = mine(&[vec![], vec![]], &BasketParams::default()).unwrap();
    assert_eq!((got.n_transactions, got.itemsets.len()), (2, 0));
}

#[test]
fn invalid_params_are_typed_errors() {
    let tx = vec![vec![1, 2]];
    let with = |f: fn(&mut BasketParams)| {
        let mut p = BasketParams::default();
        f(&mut p);
        mine(&tx, &p).unwrap_err()
    };
    assert_eq!(with(|p| p.min_support = 0.0), BasketError::InvalidMinSupport(0.0));
    assert!(matches!(with(|p| p.min_support = f64::NAN), BasketError::InvalidMinSupport(_)));
    assert_eq!(with(|p| p.min_support = 1.5), BasketError::InvalidMinSupport(1.5));
    assert_eq!(with(|p| p.min_count = Some(0)), BasketError::InvalidMinCount);
    assert_eq!(with(|p| p.min_confidence = 1.01), BasketError::InvalidMinConfidence(1.01));
    assert!(matches!(with(|p| p.min_confidence = f64::NAN), BasketError::InvalidMinConfidence(_)));
    assert!(matches!(with(|p| p.min_lift = f64::INFINITY), BasketError::InvalidMinLift(_)));
    assert_eq!(with(|p| p.min_lift = -1.0), BasketError::InvalidMinLift(-1.0));
    assert_eq!(with(|p| p.max_len = Some(0)), BasketError::InvalidMaxLen);
    // min_count replaces min_support, so a bad fraction beside it is not looked at.
    let p = BasketParams { min_support: 0.0, min_count: Some(1), ..Default::default() };
    assert_eq!(mine(&tx, &p).unwrap().itemsets.len(), 3);
}

#[test]
fn single_transaction_yields_every_subset_with_certain_rules() {
    let got = mine(&[vec![7, 3, 5, 3]], &params(1, None, 0.0, 0.0)).unwrap();
    let sets: Vec<&[u32]> = got.itemsets.iter().map(|s| s.items.as_slice()).collect();
    assert_eq!(sets, [&[3][..], &[5], &[7], &[3, 5], &[3, 7], &[5, 7], &[3, 5, 7]]);
    assert!(got.itemsets.iter().all(|s| s.count == 1 && s.support == 1.0));
    // 3 pairs × 2 splits + 6 splits of the triple.
    assert_eq!(got.rules.len(), 12);
    for r in &got.rules {
        assert_eq!((r.confidence, r.lift, r.leverage, r.conviction), (1.0, 1.0, 0.0, None));
    }
}

#[test]
fn identical_transactions_and_max_len() {
    let tx = vec![vec![1, 2, 3, 3]; 10];
    let got = mine(&tx, &params(10, Some(2), 0.3, 1.0)).unwrap();
    assert_eq!(got.itemsets.len(), 6);
    assert!(got.itemsets.iter().all(|s| s.count == 10 && s.items.len() <= 2));
    assert_eq!(got.rules.len(), 6);
    // Above the count of every item: nothing is frequent.
    assert!(mine(&tx, &params(11, None, 0.0, 0.0)).unwrap().itemsets.is_empty());
    // max_len 1: the items only, no rules.
    let got = mine(&tx, &params(1, Some(1), 0.0, 0.0)).unwrap();
    assert_eq!((got.itemsets.len(), got.rules.len()), (3, 0));
}

#[test]
fn itemset_limit_is_exact() {
    // One basket of 10 items: 2^10 - 1 = 1023 frequent itemsets.
    let tx = vec![(0..10).collect::<Vec<u32>>()];
    let p = |limit| BasketParams {
        min_count: Some(1),
        max_len: None,
        min_lift: 2.0,
        max_itemsets: limit,
        ..Default::default()
    };
    assert_eq!(mine(&tx, &p(1023)).unwrap().itemsets.len(), 1023);
    assert_eq!(mine(&tx, &p(1022)).unwrap_err(), BasketError::TooManyItemsets { limit: 1022 });
}

#[test]
fn result_does_not_depend_on_thread_count_or_basket_order() {
    let mut tx: Vec<Vec<u32>> =
        (0..300u32).map(|i| (0..(i % 7 + 1)).map(|j| (i * 31 + j * 17) % 23).collect()).collect();
    let p = params(8, Some(3), 0.2, 0.0);
    let run = |threads, tx: &[Vec<u32>]| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| mine(tx, &p).unwrap())
    };
    let one = run(1, &tx);
    assert!(one.itemsets.len() > 30 && !one.rules.is_empty());
    assert_eq!(one, run(4, &tx));
    tx.reverse();
    assert_eq!(one, run(3, &tx));
}

#[test]
fn dictionary_maps_skus_in_key_order() {
    let (dict, tx) = ItemDictionary::from_baskets(&[vec!["SKU-B", "SKU-A"], vec!["SKU-C", "SKU-B", "SKU-B"]]).unwrap();
    assert_eq!(tx, vec![vec![1, 0], vec![2, 1, 1]]);
    assert_eq!((dict.len(), dict.id("SKU-C"), dict.key(0), dict.key(3)), (3, Some(2), Some("SKU-A"), None));
    assert_eq!(dict.keys(&[2, 0]), Some(vec!["SKU-C", "SKU-A"]));
    assert_eq!(dict.keys(&[9]), None);
    assert!(ItemDictionary::from_baskets::<&str>(&[]).unwrap().0.is_empty());
}

#[test]
fn serialises_infinite_conviction_as_null_and_params_default_from_empty_config() {
    let got = mine(&[vec![1, 2]], &params(1, None, 0.0, 0.0)).unwrap();
    let json = serde_json::to_string(&got.rules[0]).unwrap();
    assert!(json.contains("\"conviction\":null"), "{json}");
    let p: BasketParams = serde_json::from_str("{\"min_support\": 0.05}").unwrap();
    assert_eq!(p, BasketParams { min_support: 0.05, ..BasketParams::default() });
}
