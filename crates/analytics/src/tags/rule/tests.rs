use std::collections::HashMap;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn decl(name: &str, kind: FeatureType) -> FeatureDecl {
    FeatureDecl { name: name.into(), kind, description: None }
}

fn schema() -> FeatureSchema {
    FeatureSchema::new(vec![
        decl("orders_365d", FeatureType::Number),
        decl("aov_fen", FeatureType::Number),
        decl("city", FeatureType::Text),
        decl("has_app", FeatureType::Bool),
        decl("a", FeatureType::Bool),
        decl("b", FeatureType::Bool),
        decl("c", FeatureType::Bool),
        decl("gmv_90d", FeatureType::Number),
        decl("gmv_prev_90d", FeatureType::Number),
        decl("channel", FeatureType::Text),
    ])
    .unwrap()
}

fn compile(src: &str) -> CompiledCondition {
    parse_condition(src).unwrap().compile(&schema()).unwrap()
}

fn member(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}
fn n(x: f64) -> Value {
    Value::Number(x)
}
fn s(x: &str) -> Value {
    Value::Text(x.into())
}

/// `None` = feature missing (unknown).
fn abc(a: Option<bool>, bb: Option<bool>, c: Option<bool>) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for (k, v) in [("a", a), ("b", bb), ("c", c)] {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::Bool(v));
        }
    }
    m
}

#[test]
fn and_binds_tighter_than_or() {
    // a or (b and c) vs (a or b) and c differ at a = T, b = F, c = F.
    let m = abc(Some(true), Some(false), Some(false));
    assert_eq!(compile("a or b and c").eval(&m), Truth::True);
    assert_eq!(compile("(a or b) and c").eval(&m), Truth::False);
    // b and c or a, same grouping from the other side.
    assert_eq!(compile("b and c or a").eval(&m), Truth::True);
}

#[test]
fn not_binds_tighter_than_and() {
    // (not a) and b vs not (a and b) differ at a = F, b = F.
    let m = abc(Some(false), Some(false), None);
    assert_eq!(compile("not a and b").eval(&m), Truth::False);
    assert_eq!(compile("not (a and b)").eval(&m), Truth::True);
    // `not city in [...]` negates the membership test.
    let sh = member(&[("city", s("上海"))]);
    let hz = member(&[("city", s("杭州"))]);
    let c = compile(r#"not city in ["上海", "北京"]"#);
    assert!(!c.matches(&sh));
    assert!(c.matches(&hz));
    let c2 = compile(r#"city not in ["上海", "北京"]"#);
    assert!(!c2.matches(&sh));
    assert!(c2.matches(&hz));
}

#[test]
fn keywords_are_case_insensitive_and_not_chains_fold() {
    let m = abc(Some(true), Some(false), None);
    assert_eq!(compile("a AND NOT b").eval(&m), Truth::True);
    assert_eq!(compile("not not a").eval(&m), Truth::True);
    assert_eq!(compile("not not not a").eval(&m), Truth::False);
    let deep = format!("{}a", "not ".repeat(1001));
    assert_eq!(compile(&deep).eval(&m), Truth::False);
}

#[test]
fn kleene_truth_tables() {
    use Truth::{False as F, True as T, Unknown as U};
    let vals = [Some(true), Some(false), None];
    let truth = |v: Option<bool>| match v {
        Some(true) => T,
        Some(false) => F,
        None => U,
    };
    // Expected tables written out from the definition (rows a = T, F, U; columns b = T, F, U).
    let and = [[T, F, U], [F, F, F], [U, F, U]];
    let or = [[T, T, T], [T, F, U], [T, U, U]];
    let c_and = compile("a and b");
    let c_or = compile("a or b");
    let c_not = compile("not a");
    for (i, a) in vals.iter().enumerate() {
        for (j, bb) in vals.iter().enumerate() {
            let m = abc(*a, *bb, None);
            assert_eq!(c_and.eval(&m), and[i][j], "{a:?} and {bb:?}");
            assert_eq!(c_or.eval(&m), or[i][j], "{a:?} or {bb:?}");
        }
        let m = abc(*a, None, None);
        let expected_not = match truth(*a) {
            T => F,
            F => T,
            U => U,
        };
        assert_eq!(c_not.eval(&m), expected_not);
    }
}

#[test]
fn comparisons_on_numbers_text_and_bools() {
    let m = member(&[
        ("orders_365d", n(3.0)),
        ("aov_fen", n(30000.0)),
        ("city", s("杭州")),
        ("has_app", b(true)),
        ("gmv_90d", n(500.0)),
        ("gmv_prev_90d", n(400.0)),
    ]);
    let cases = [
        ("orders_365d >= 3", true),
        ("orders_365d > 3", false),
        ("orders_365d <= 3", true),
        ("orders_365d < 3", false),
        ("orders_365d = 3", true),
        ("orders_365d == 3.0", true),
        ("orders_365d != 3", false),
        ("orders_365d <> 4", true),
        ("aov_fen > 30_000", false),
        ("aov_fen >= 30_000", true),
        ("orders_365d > -1", true),
        ("orders_365d in [1, 2, 3]", true),
        ("orders_365d not in [1, 2, 3]", false),
        (r#"city = "杭州""#, true),
        ("city = '杭州'", true),
        ("city = “杭州”", true),
        (r#"city != "杭州""#, false),
        (r#"city in ["上海", "北京"]"#, false),
        ("has_app", true),
        ("has_app = false", false),
        ("not has_app", false),
        ("gmv_90d > gmv_prev_90d", true),
        ("gmv_90d < gmv_prev_90d", false),
        (r#"orders_365d >= 3 and aov_fen > 20000 and not city in ["上海", "北京"]"#, true),
    ];
    for (src, expected) in cases {
        assert_eq!(compile(src).matches(&m), expected, "{src}");
    }
}

#[test]
fn missing_nan_and_wrong_typed_values_are_unknown() {
    let c = compile("orders_365d >= 3");
    assert_eq!(c.eval(&member(&[])), Truth::Unknown);
    assert_eq!(c.eval(&member(&[("orders_365d", n(f64::NAN))])), Truth::Unknown);
    assert_eq!(c.eval(&member(&[("orders_365d", s("3"))])), Truth::Unknown);
    // Unknown city: `not city in [...]` does not fire.
    let c = compile(r#"not city in ["上海"]"#);
    assert_eq!(c.eval(&member(&[])), Truth::Unknown);
    assert!(!c.matches(&member(&[])));
    // ...but `false and unknown` is false, `true or unknown` is true.
    let m = member(&[("orders_365d", n(1.0))]);
    assert_eq!(compile(r#"orders_365d > 2 and city = "x""#).eval(&m), Truth::False);
    assert_eq!(compile(r#"orders_365d > 0 or city = "x""#).eval(&m), Truth::True);
}

#[test]
fn row_and_map_lookups_agree() {
    let sch = schema();
    let c = parse_condition(r#"orders_365d >= 2 and city = "上海""#).unwrap().compile(&sch).unwrap();
    let mut row: Vec<Option<Value>> = vec![None; sch.features().len()];
    row[sch.id_of("orders_365d").unwrap()] = Some(n(2.0));
    row[sch.id_of("city").unwrap()] = Some(s("上海"));
    let map = member(&[("orders_365d", n(2.0)), ("city", s("上海"))]);
    assert!(c.matches(&row[..]));
    assert!(c.matches(&map));
    let btree: BTreeMap<String, Value> = map.into_iter().collect();
    assert!(c.matches(&btree));
}

fn syntax_at(src: &str) -> (usize, String, String) {
    match parse_condition(src) {
        Err(RuleError::Syntax { column, found, expected }) => (column, found, expected),
        other => panic!("{src}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_name_column_and_token() {
    let (col, found, expected) = syntax_at("orders_365d >= and x");
    assert_eq!((col, found.as_str()), (16, "`and`"));
    assert!(expected.contains("number"), "{expected}");

    // Chinese characters count as one column each.
    let (col, found, _) = syntax_at(r#"city = "上海" and and"#);
    assert_eq!((col, found.as_str()), (17, "`and`"));

    let (col, found, _) = syntax_at("orders_365d >= 3 and");
    assert_eq!((col, found.as_str()), (21, "end of condition"));

    let (col, found, expected) = syntax_at("a && b");
    assert_eq!((col, found.as_str(), expected.as_str()), (3, "character `&`", "`and`"));

    let (col, found, _) = syntax_at(r#"city = "上海"#);
    assert_eq!((col, found.as_str()), (8, "unterminated string"));

    let (col, found, expected) = syntax_at("a)");
    assert_eq!((col, found.as_str()), (2, "`)`"));
    assert!(expected.contains("no matching"));

    let (col, found, expected) = syntax_at("(a or b");
    assert_eq!((col, found.as_str(), expected.as_str()), (8, "end of condition", "`and`, `or` or `)`"));

    let (col, found, _) = syntax_at("orders_365d 3");
    assert_eq!((col, found.as_str()), (13, "number `3`"));

    let (col, found, _) = syntax_at("city in [\"a\" \"b\"]");
    assert_eq!((col, found.as_str()), (14, "string \"b\""));

    let (col, found, _) = syntax_at("city in []");
    assert_eq!((col, found.as_str()), (10, "`]`"));

    let (col, found, _) = syntax_at("3 < orders_365d");
    assert_eq!((col, found.as_str()), (1, "number `3`"));

    assert_eq!(parse_condition("   "), Err(RuleError::Empty));
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(parse_condition(&deep), Err(RuleError::TooDeep { column: MAX_NESTING + 1, max: MAX_NESTING }));
    let ok = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    assert!(parse_condition(&ok).is_ok());
    let long = "a or ".repeat(1000) + "a";
    assert!(matches!(parse_condition(&long), Err(RuleError::TooLong { .. })));
}

#[test]
fn validation_reports_unknown_features_and_type_errors() {
    let sch = schema();
    let err = |src: &str| parse_condition(src).unwrap().compile(&sch).unwrap_err();
    assert_eq!(err("orders_365d >= 3 and foo < 2"), RuleError::UnknownFeature { column: 22, name: "foo".into() });
    assert_eq!(err("gmv_90d > gmv_prev_9d"), RuleError::UnknownFeature { column: 11, name: "gmv_prev_9d".into() });
    assert!(matches!(err("city > 3"), RuleError::Type { column: 6, .. }));
    assert!(matches!(err(r#"orders_365d = "3""#), RuleError::Type { column: 15, .. }));
    assert!(matches!(err("orders_365d"), RuleError::Type { column: 1, .. }));
    assert!(matches!(err(r#"city in ["上海", 3]"#), RuleError::Type { column: 16, .. }));
    assert!(matches!(err("city = orders_365d"), RuleError::Type { column: 8, .. }));
    // The Display names the column.
    assert_eq!(err("orders_365d >= 3 and foo < 2").to_string(), "column 22: unknown feature `foo`");
}

#[test]
fn a_struct_can_answer_by_position() {
    // How the main crate feeds members: a plain struct, looked up by the schema position.
    struct Row {
        orders_365d: i64,
        city: Option<String>,
    }
    impl MemberFeatures for Row {
        fn feature(&self, id: usize, _name: &str) -> Option<ValueRef<'_>> {
            match id {
                0 => Some(ValueRef::Number(self.orders_365d as f64)),
                1 => self.city.as_deref().map(ValueRef::Text),
                _ => None,
            }
        }
    }
    let sch: FeatureSchema =
        serde_json::from_str(r#"[{"name": "orders_365d", "type": "number"}, {"name": "city", "type": "text"}]"#)
            .unwrap();
    let c = parse_condition(r#"orders_365d >= 3 and not city in ["上海", "北京"]"#).unwrap().compile(&sch).unwrap();
    assert!(c.matches(&Row { orders_365d: 3, city: Some("杭州".into()) }));
    assert!(!c.matches(&Row { orders_365d: 3, city: Some("北京".into()) }));
    assert_eq!(c.eval(&Row { orders_365d: 3, city: None }), Truth::Unknown);
    assert!(
        serde_json::from_str::<FeatureSchema>(r#"[{"name": "x", "type": "number"}, {"name": "x", "type": "text"}]"#)
            .is_err()
    );
}

#[test]
fn schema_rejects_duplicates_and_bad_names() {
    assert!(FeatureSchema::new(vec![decl("x", FeatureType::Number), decl("x", FeatureType::Text)]).is_err());
    assert!(FeatureSchema::new(vec![decl("and", FeatureType::Number)]).is_err());
    assert!(FeatureSchema::new(vec![decl("9x", FeatureType::Number)]).is_err());
    assert!(FeatureSchema::new(vec![decl("城市", FeatureType::Text)]).is_err());
}

#[test]
fn rule_set_from_json_gives_observations_with_reasons() {
    let defs: Vec<RuleTagDef> = serde_json::from_str(
        r#"[
            {"tag": "高价值", "category": "value",
             "condition": "orders_365d >= 3 and aov_fen > 30000 and not city in [\"上海\", \"北京\"]"},
            {"tag": "app_user", "category": "channel", "condition": "has_app", "strength": 0.8}
        ]"#,
    )
    .unwrap();
    assert_eq!(defs[0].strength, 1.0);
    let set = RuleSet::compile(&defs, &schema()).unwrap();
    let m = member(&[("orders_365d", n(5.0)), ("aov_fen", n(41000.0)), ("city", s("杭州")), ("has_app", b(false))]);
    assert_eq!(set.matching(&m), vec![0]);
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let obs = set.observations(42, &m, at);
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].tag, "高价值");
    assert_eq!(obs[0].source, TagSource::Rule);
    assert_eq!(obs[0].strength, 1.0);
    assert!(obs[0].reason.ends_with(r#"held (orders_365d = 5, aov_fen = 41000, city = "杭州")"#), "{}", obs[0].reason);

    let bad = vec![RuleTagDef {
        tag: "broken".into(),
        category: "value".into(),
        condition: "orders_365d >".into(),
        strength: 1.0,
    }];
    let e = RuleSet::compile(&bad, &schema()).unwrap_err();
    assert!(matches!(&e, RuleError::InRule { tag, .. } if tag == "broken"));
    assert!(e.to_string().starts_with("rule tag `broken`: column 14:"), "{e}");
}

proptest! {
    /// The parser never panics, whatever the text.
    #[test]
    fn parser_never_panics(src in "\\PC{0,120}") {
        let _ = parse_condition(&src).map(|c| c.compile(&schema()));
    }

    /// Nor on text made of the language's own tokens in random order.
    #[test]
    fn parser_never_panics_on_token_soup(toks in proptest::collection::vec(
        prop_oneof![
            Just("a"), Just("orders_365d"), Just("city"), Just("and"), Just("or"), Just("not"),
            Just("in"), Just("("), Just(")"), Just("["), Just("]"), Just(","), Just(">="), Just("="),
            Just("3"), Just("\"上海\""), Just("true"),
        ], 0..30)) {
        let src = toks.join(" ");
        if let Ok(cc) = parse_condition(&src).and_then(|c| c.compile(&schema())) {
            let _ = cc.eval(&member(&[("a", b(true)), ("orders_365d", n(3.0))]));
        }
    }
}

/// Throughput of rule evaluation: 1,000,000 members × 20 rule tags.
/// `cargo test --release -p huiyuan-analytics tags::rule::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_rule_evaluation() {
    use rand::{Rng, SeedableRng};
    use rayon::prelude::*;
    let sch = schema();
    let conditions = [
        "orders_365d >= 3",
        "orders_365d >= 3 and aov_fen > 30000",
        r#"not city in ["上海", "北京"]"#,
        r#"orders_365d >= 3 and aov_fen > 30000 and not city in ["上海", "北京"]"#,
        "has_app and orders_365d > 0",
        "gmv_90d > gmv_prev_90d",
        "gmv_90d < gmv_prev_90d",
        r#"channel = "wechat" or channel = "douyin""#,
        r#"(a or b) and not c"#,
        "aov_fen >= 20000 and aov_fen < 40000",
        "orders_365d in [1, 2]",
        "orders_365d = 0",
        r#"city = "杭州" and has_app"#,
        "gmv_90d >= 100000",
        "gmv_prev_90d >= 100000 and gmv_90d < 50000",
        "not has_app",
        "a and b and c",
        r#"channel in ["tmall", "jd", "wechat"]"#,
        "aov_fen < 5000 or orders_365d > 10",
        r#"(orders_365d >= 2 or aov_fen > 50000) and (city != "北京")"#,
    ];
    let defs: Vec<RuleTagDef> = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| RuleTagDef {
            tag: format!("t{i}"),
            category: "value".into(),
            condition: (*c).to_string(),
            strength: 1.0,
        })
        .collect();
    let set = RuleSet::compile(&defs, &sch).unwrap();
    let cities = ["上海", "北京", "杭州", "成都"];
    let channels = ["wechat", "douyin", "tmall", "jd"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n_members = 1_000_000;
    let rows: Vec<Vec<Option<Value>>> = (0..n_members)
        .map(|_| {
            vec![
                Some(n(rng.random_range(0..12) as f64)),
                Some(n(rng.random_range(1000..80000) as f64)),
                Some(s(cities[rng.random_range(0..4)])),
                Some(b(rng.random_bool(0.4))),
                Some(b(rng.random_bool(0.5))),
                Some(b(rng.random_bool(0.5))),
                Some(b(rng.random_bool(0.5))),
                Some(n(rng.random_range(0..200000) as f64)),
                Some(n(rng.random_range(0..200000) as f64)),
                Some(s(channels[rng.random_range(0..4)])),
            ]
        })
        .collect();
    let start = std::time::Instant::now();
    let hits: usize = rows.iter().map(|r| set.matching(&r[..]).len()).sum();
    let single = start.elapsed();
    let start = std::time::Instant::now();
    let hits_par: usize = rows.par_iter().map(|r| set.matching(&r[..]).len()).sum();
    let par = start.elapsed();
    assert_eq!(hits, hits_par);
    let maps: Vec<HashMap<String, Value>> = rows[..100_000]
        .iter()
        .map(|r| sch.features().iter().zip(r).filter_map(|(d, v)| v.clone().map(|v| (d.name.clone(), v))).collect())
        .collect();
    let start = std::time::Instant::now();
    let map_hits: usize = maps.iter().map(|m| set.matching(m).len()).sum();
    let map_time = start.elapsed();
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let start = std::time::Instant::now();
    let obs: usize =
        rows[..100_000].iter().enumerate().map(|(i, r)| set.observations(i as i64, &r[..], at).len()).sum();
    let obs_time = start.elapsed();
    println!(
        "{n_members} members x {} rules: {hits} hits; 1 thread {:.0} ms ({:.0} ns/member-rule), \
         rayon {:.0} ms; HashMap features (100k members) {:.0} ms ({map_hits} hits); \
         observations with reasons (100k members) {:.0} ms ({obs} obs)",
        defs.len(),
        single.as_secs_f64() * 1e3,
        single.as_secs_f64() * 1e9 / (n_members as f64 * defs.len() as f64),
        par.as_secs_f64() * 1e3,
        map_time.as_secs_f64() * 1e3,
        obs_time.as_secs_f64() * 1e3,
    );
}
