use approx::assert_abs_diff_eq;
use chrono::{Duration, TimeZone};

use super::*;
use crate::tags::weight::{TagWeightParams, update_member_tags};

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap() + Duration::days(n)
}

fn def(tag: &str, keywords: &[&str]) -> KeywordTagDef {
    KeywordTagDef {
        tag: tag.into(),
        category: "interest".into(),
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        strength: 0.5,
    }
}

fn tagger() -> KeywordTagger {
    KeywordTagger::new(
        vec![
            def("敏感肌", &["敏感肌", "皮肤敏感", "敏感", "sensitive skin", "sensitive"]),
            def("油皮", &["油皮", "油性皮肤", "oily"]),
            def("送礼", &["送礼", "礼物", "gift"]),
        ],
        &KeywordParams::default(),
    )
    .unwrap()
}

/// (tag, negated) of every mention, mentions of one tag at the same place collapsed.
fn found(text: &str) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = tagger().scan(text).into_iter().map(|m| (m.tag, m.negated_by.is_some())).collect();
    v.dedup();
    v
}

fn tags_of(text: &str) -> Vec<String> {
    let mut v: Vec<String> = found(text).into_iter().filter(|(_, n)| !n).map(|(t, _)| t).collect();
    v.dedup();
    v
}

#[test]
fn normalisation_folds_full_width_case_and_spaces() {
    assert_eq!(normalize_text("ＳＥＮＳＩＴＩＶＥ　Ｓｋｉｎ，敏感肌！"), "sensitive skin,敏感肌!");
    assert_eq!(normalize_text("  Isn’t   ＯＩＬＹ\n"), "isn't oily");
    assert_eq!(normalize_text("１２３ＡＢＣ"), "123abc");
}

#[test]
fn chinese_and_full_width_text_matches() {
    assert_eq!(tags_of("我是敏感肌，用了很舒服"), ["敏感肌"]);
    assert_eq!(tags_of("皮肤ＯＩＬＹ，夏天出油"), ["油皮"]);
    assert_eq!(tags_of("Great GIFT for my mum"), ["送礼"]);
    assert_eq!(tags_of("买来送礼的，油性皮肤也能用"), ["送礼", "油皮"]);
    assert!(tags_of("质量很好，物流很快").is_empty());
}

#[test]
fn english_keywords_need_word_boundaries() {
    assert!(tags_of("an insensitive reply").is_empty());
    assert!(tags_of("gifted kid").is_empty());
    assert_eq!(tags_of("very sensitive."), ["敏感肌"]);
    // CJK keywords have no boundaries to respect.
    assert_eq!(tags_of("超敏感肌肤"), ["敏感肌"]);
}

#[test]
fn simple_negations_give_no_tag() {
    for text in [
        "我不是敏感肌",
        "我不太敏感",
        "皮肤没有那么敏感",
        "并非敏感肌",
        "I'm not sensitive at all",
        "my skin isn’t very sensitive",
        "no sensitive skin issues",
        "ＮＯＴ ＳＥＮＳＩＴＩＶＥ",
    ] {
        assert!(tags_of(text).is_empty(), "{text}: {:?}", found(text));
        assert!(found(text).iter().any(|(t, n)| t == "敏感肌" && *n), "{text}");
    }
}

#[test]
fn negation_scope_ends_at_clauses_and_contrasts() {
    assert_eq!(tags_of("皮肤不好，敏感肌"), ["敏感肌"]);
    assert_eq!(tags_of("not oily but sensitive"), ["敏感肌"]);
    assert_eq!(found("not oily but sensitive"), [("油皮".to_string(), true), ("敏感肌".to_string(), false)]);
    assert_eq!(tags_of("不油，但是敏感"), ["敏感肌"]);
    assert_eq!(tags_of("不是油皮但很敏感"), ["敏感肌"]);
    // Words containing 不/非 that do not negate.
    assert_eq!(tags_of("效果不错敏感肌也能用"), ["敏感肌"]);
    assert_eq!(tags_of("非常敏感"), ["敏感肌"]);
    // Far enough before the keyword, a cue no longer applies.
    assert_eq!(tags_of("not a fan of the smell, sensitive skin here"), ["敏感肌"]);
    assert_eq!(tags_of("I do not usually write reviews about sensitive skin"), ["敏感肌"]);
}

#[test]
fn documented_limit_double_negation_is_not_understood() {
    // "不是不敏感" means "is sensitive"; the guard only sees the nearby 不 and drops it.
    assert!(tags_of("不是不敏感").is_empty());
    // A cue used in another sense inside the window.
    assert!(tags_of("没洗脸就敏感").is_empty());
}

#[test]
fn hits_per_member_count_mentions_texts_and_last_time() {
    let texts = vec![
        MemberText { member_id: 7, at: day(0), text: "敏感肌，真的敏感肌可用".into() },
        MemberText { member_id: 7, at: day(5), text: "不是敏感肌".into() },
        MemberText { member_id: 7, at: day(3), text: "Sensitive skin friendly".into() },
        MemberText { member_id: 8, at: day(1), text: "送礼很合适".into() },
    ];
    let scan = tagger().tag_texts(&texts);
    assert_eq!(scan.hits.len(), 2);
    let h = &scan.hits[0];
    assert_eq!((h.member_id, h.tag.as_str()), (7, "敏感肌"));
    // "敏感肌" + "敏感" overlap and count once: two mentions in text 1, one in text 3 ("sensitive skin"
    // and "sensitive" overlap), and one negated in text 2.
    assert_eq!(h.mentions, 3);
    assert_eq!(h.negated_mentions, 1);
    assert_eq!(h.texts, 2);
    assert_eq!(h.last_hit_at, Some(day(3)));
    assert_eq!(h.keywords, ["sensitive", "sensitive skin", "敏感", "敏感肌"]);
    assert_eq!((scan.hits[1].member_id, scan.hits[1].mentions), (8, 1));

    // One observation per (text, tag) with an un-negated mention.
    assert_eq!(scan.observations.len(), 3);
    assert!(scan.observations.iter().all(|o| o.source == TagSource::Keyword && o.strength == 0.5));
    assert!(scan.observations[0].reason.starts_with("text of 2026-03-01 mentions"));

    // Fed to the weight update: interest half-life 60 d; texts at day 0 and day 3 for member 7:
    // 0.5 · 0.5^(3/60) → noisy-OR with 0.5 at day 3, then decayed to as_of day 3.
    let up = update_member_tags(&[], &scan.observations, day(5), &TagWeightParams::default()).unwrap();
    let t = up.tags.iter().find(|t| t.member_id == 7).unwrap();
    let expected = 1.0 - (1.0 - 0.5 * 0.5f64.powf(3.0 / 60.0)) * 0.5;
    assert_abs_diff_eq!(t.support_weight, expected, epsilon = 1e-12);
    assert_abs_diff_eq!(t.weight, expected * 0.5f64.powf(2.0 / 60.0), epsilon = 1e-12);
    assert_eq!(t.last_supported_at, day(3));
}

#[test]
fn a_keyword_shared_by_two_tags_tags_both() {
    let t = KeywordTagger::new(
        vec![def("护肤", &["面霜", "精华"]), def("保湿", &["面霜", "补水"])],
        &KeywordParams::default(),
    )
    .unwrap();
    let tags: Vec<String> = t.scan("这款面霜很好").into_iter().map(|m| m.tag).collect();
    assert_eq!(tags, ["保湿", "护肤"]);
}

#[test]
fn invalid_definitions_are_rejected() {
    let p = KeywordParams::default();
    assert!(KeywordTagger::new(vec![def("x", &[])], &p).is_err());
    assert!(KeywordTagger::new(vec![def("x", &["  "])], &p).is_err());
    assert!(KeywordTagger::new(vec![def("", &["a"])], &p).is_err());
    let mut d = def("x", &["a"]);
    d.strength = 0.0;
    assert!(KeywordTagger::new(vec![d], &p).is_err());
    // Empty input texts are fine.
    let scan = tagger().tag_texts(&[]);
    assert!(scan.hits.is_empty() && scan.observations.is_empty());
    assert!(tagger().scan("").is_empty());
}

#[test]
fn definitions_deserialize_with_default_strength() {
    let d: KeywordTagDef =
        serde_json::from_str(r#"{"tag": "敏感肌", "category": "interest", "keywords": ["敏感肌"]}"#).unwrap();
    assert_eq!(d.strength, 0.5);
    let p: KeywordParams = serde_json::from_str(r#"{"cjk_window_chars": 2}"#).unwrap();
    assert_eq!(p.word_window, 3);
    assert!(p.negation_cues.iter().any(|c| c == "不"));
}

/// Throughput of keyword tagging: 200,000 texts against 50 tags × 5 keywords.
/// `cargo test --release -p huiyuan-analytics tags::keyword::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_keyword_tagging() {
    use rand::{Rng, SeedableRng};
    let words = ["敏感肌", "油皮", "送礼", "保湿", "美白", "sensitive", "gift", "oily", "补水", "抗老"];
    let defs: Vec<KeywordTagDef> = (0..50)
        .map(|i| {
            let kws: Vec<String> = (0..5).map(|j| format!("{}{}", words[(i + j) % words.len()], i)).collect();
            KeywordTagDef { tag: format!("t{i}"), category: "interest".into(), keywords: kws, strength: 0.5 }
        })
        .collect();
    let t = KeywordTagger::new(defs, &KeywordParams::default()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let fillers = ["这款产品很好用，", "物流很快。", "我不是", "not really ", "效果不错", "Ｇｒｅａｔ！", "包装精美，"];
    let texts: Vec<MemberText> = (0..200_000)
        .map(|i| {
            let mut s = String::new();
            for _ in 0..6 {
                s.push_str(fillers[rng.random_range(0..fillers.len())]);
                if rng.random_bool(0.3) {
                    s.push_str(&format!("{}{}", words[rng.random_range(0..words.len())], rng.random_range(0..50)));
                }
            }
            MemberText { member_id: i / 3, at: day(i % 90), text: s }
        })
        .collect();
    let chars: usize = texts.iter().map(|t| t.text.chars().count()).sum();
    let start = std::time::Instant::now();
    let scan = t.tag_texts(&texts);
    let el = start.elapsed();
    println!(
        "{} texts ({chars} chars) x 250 keywords: {:.0} ms, {} member-tag hit rows, {} observations",
        texts.len(),
        el.as_secs_f64() * 1e3,
        scan.hits.len(),
        scan.observations.len()
    );
}
