use super::*;
use chrono::Days;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn as_of() -> NaiveDate {
    day(2024, 12, 31)
}

fn member(id: i64, recency: Option<u64>, orders: u32, yuan: i64) -> RfmInput {
    RfmInput {
        member_id: id,
        last_purchase: recency.map(|r| as_of().checked_sub_days(Days::new(r)).unwrap()),
        orders,
        monetary_fen: yuan * 100,
    }
}

/// The hand-computed population.
///
/// ```text
/// id  rec  F  M(yuan) | R  F  M | R>3.0 F>2.8 M>3.0 | segment
///  1    5 10   5000   | 5  5  5 |  H     H     H    | important_value
///  2   10  1   3000   | 5  1  4 |  H     L     H    | important_develop
///  3   20  6    800   | 4  4  2 |  H     H     L    | general_value
///  4   40  1    200   | 4  1  2 |  H     L     L    | general_develop
///  5   60  3   1500   | 3  3  3 |  L     H     L    | general_keep
///  6  100  8   4000   | 3  5  5 |  L     H     H    | important_keep
///  7  150  2    100   | 2  3  1 |  L     H     L    | general_keep
///  8  200  1     50   | 2  1  1 |  L     L     L    | general_retain
///  9  300  4   2500   | 1  4  3 |  L     H     L    | general_keep
/// 10  364  1   3500   | 1  1  4 |  L     L     H    | important_retain
/// 11  365  2    900   | not scored (outside the window: recency 0..=364)
/// 12    -  0      0   | not scored (never bought)
/// ```
/// n = 10, score = 1 + floor(5 * b / 10) = 1 + floor(b / 2), b = members strictly worse.
/// R: recencies all distinct; b = number with larger recency: 9,8,7,6,5,4,3,2,1,0 -> 5,5,4,4,3,3,2,2,1,1.
///    Sum 30, mean 3.0; high iff score ≥ 4.
/// F sorted: 1,1,1,1,2,3,4,6,8,10. F=1: b=0 -> 1 (a four-way tie across a quintile boundary shares 1;
///    rank-"first" would give 1,1,2,2); F=2: b=4 -> 3; F=3: b=5 -> 3; F=4: b=6 -> 4; F=6: b=7 -> 4;
///    F=8: b=8 -> 5; F=10: b=9 -> 5. Sum 5+1+4+1+3+5+3+1+4+1 = 28, mean 2.8; high iff ≥ 3.
/// M sorted (yuan): 50,100,200,800,1500,2500,3000,3500,4000,5000 -> 1,1,2,2,3,3,4,4,5,5.
///    Sum 30, mean 3.0; high iff ≥ 4.
/// Cuts at sorted (worst-first) positions ceil((s-1)*10/5)-1 = 1,3,5,7:
///    R (recency descending 364,300,200,150,100,60,40,20,10,5): 300,150,60,20 -> R high iff rec < 60.
///    F: 1,1,3,6 -> F high iff orders > 1.   M: 100,800,2500,3500 yuan -> M high iff > 2500 yuan.
fn population() -> Vec<RfmInput> {
    vec![
        member(1, Some(5), 10, 5000),
        member(2, Some(10), 1, 3000),
        member(3, Some(20), 6, 800),
        member(4, Some(40), 1, 200),
        member(5, Some(60), 3, 1500),
        member(6, Some(100), 8, 4000),
        member(7, Some(150), 2, 100),
        member(8, Some(200), 1, 50),
        member(9, Some(300), 4, 2500),
        member(10, Some(364), 1, 3500),
        member(11, Some(365), 2, 900),
        member(12, None, 0, 0),
    ]
}

#[test]
fn hand_computed_scores_and_segments() {
    use RfmSegment::*;
    let rep = rfm(&population(), as_of(), &RfmParams::default());
    let expected: [(u8, u8, u8, RfmSegment); 10] = [
        (5, 5, 5, ImportantValue),
        (5, 1, 4, ImportantDevelop),
        (4, 4, 2, GeneralValue),
        (4, 1, 2, GeneralDevelop),
        (3, 3, 3, GeneralKeep),
        (3, 5, 5, ImportantKeep),
        (2, 3, 1, GeneralKeep),
        (2, 1, 1, GeneralRetain),
        (1, 4, 3, GeneralKeep),
        (1, 1, 4, ImportantRetain),
    ];
    for (m, (r, f, mm, seg)) in rep.members.iter().zip(expected) {
        let s = m.scores.unwrap();
        assert_eq!((s.r, s.f, s.m), (r, f, mm), "member {}", m.member_id);
        assert_eq!(m.segment, Some(seg), "member {}", m.member_id);
    }
    for m in &rep.members[10..] {
        assert_eq!(m.scores, None);
        assert_eq!(m.segment, None);
    }
    assert!(rep.members[10].reason.contains("outside the 365-day window"));
    assert!(rep.members[11].reason.contains("no purchase yet"));
    assert_eq!(rep.members[4].reason, "R 3 ≤ mean 3.00, F 3 > mean 2.80, M 3 ≤ mean 3.00");

    let s = &rep.summary;
    assert_eq!((s.scored, s.unscored), (10, 2));
    let counts: Vec<u64> = s.segments.iter().map(|c| c.count).collect();
    assert_eq!(counts, vec![1, 1, 1, 1, 1, 1, 3, 1]);
    assert_eq!(s.segments[3].code, "important_retain");
    assert_eq!(s.segments[3].name_zh, "重要挽留客户");
    assert_eq!(s.recency.score_cuts, vec![300, 150, 60, 20]);
    assert_eq!(s.frequency.score_cuts, vec![1, 1, 3, 6]);
    assert_eq!(s.monetary.score_cuts, vec![10_000, 80_000, 250_000, 350_000]);
    assert_eq!((s.recency.score_sum, s.frequency.score_sum, s.monetary.score_sum), (30, 28, 30));
    assert!((s.frequency.mean_score - 2.8).abs() < 1e-12);
    assert_eq!(s.recency.high_from_score, Some(4));
    assert_eq!(s.recency.high_cut, Some(60));
    assert_eq!(s.frequency.high_from_score, Some(3));
    assert_eq!(s.frequency.high_cut, Some(1));
    assert_eq!(s.monetary.high_cut, Some(250_000));
    // Mean raw recency: (5+10+20+40+60+100+150+200+300+364)/10 = 124.9.
    assert!((s.recency.mean_value - 124.9).abs() < 1e-9);
}

#[test]
fn equal_values_share_a_score() {
    // Six members: F = 1,1,1,1,1,7. The five ones share F = 1 although they span three quintiles; the 7
    // has b = 5 members below -> 1 + floor(25/6) = 5. Monetary all equal -> all 1 and nobody M-high.
    let ms: Vec<RfmInput> = (0..6).map(|i| member(i, Some(10 + i as u64), if i == 5 { 7 } else { 1 }, 100)).collect();
    let rep = rfm(&ms, as_of(), &RfmParams::default());
    let f: Vec<u8> = rep.members.iter().map(|m| m.scores.unwrap().f).collect();
    assert_eq!(f, vec![1, 1, 1, 1, 1, 5]);
    assert!(rep.members.iter().all(|m| m.scores.unwrap().m == 1));
    assert!(rep.members.iter().all(|m| !m.scores.unwrap().m_high));
    assert_eq!(rep.summary.monetary.high_from_score, Some(2));
    assert_eq!(rep.summary.monetary.high_cut, Some(10_000));
    // Exactly-equal recency too: two members bought the same day, same score.
    let ms = vec![member(1, Some(3), 1, 1), member(2, Some(3), 1, 2), member(3, Some(9), 1, 3)];
    let rep = rfm(&ms, as_of(), &RfmParams::default());
    let r: Vec<u8> = rep.members.iter().map(|m| m.scores.unwrap().r).collect();
    // b = members with larger recency: 1, 1, 0 -> 1 + floor(5/3) = 2, 2, 1.
    assert_eq!(r, vec![2, 2, 1]);
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let rep = rfm(&[], as_of(), &RfmParams::default());
    assert!(rep.members.is_empty());
    assert_eq!(rep.summary.scored, 0);
    assert!(rep.summary.recency.score_cuts.is_empty());
    assert_eq!(rep.summary.recency.high_cut, None);

    let one = [member(1, Some(0), 1, -500)];
    let rep = rfm(&one, as_of(), &RfmParams::default());
    let s = rep.members[0].scores.unwrap();
    assert_eq!((s.r, s.f, s.m), (1, 1, 1));
    assert_eq!(rep.members[0].segment, Some(RfmSegment::GeneralRetain));
    assert_eq!(rep.summary.recency.high_from_score, Some(2));

    // Purchase after as_of, orders without a window purchase, zero window, extreme values.
    let odd = [
        RfmInput { member_id: 1, last_purchase: Some(day(2025, 1, 5)), orders: 1, monetary_fen: 1 },
        member(2, Some(3), 0, 0),
        RfmInput { orders: u32::MAX, monetary_fen: i64::MAX, ..member(3, Some(1), 0, 0) },
        RfmInput { monetary_fen: i64::MIN, ..member(4, Some(2), 1, 0) },
    ];
    let rep = rfm(&odd, as_of(), &RfmParams::default());
    assert!(rep.members[0].reason.contains("after the scoring day"));
    assert!(rep.members[1].reason.contains("no orders"));
    assert_eq!(rep.summary.scored, 2);
    assert_eq!(rep.members[2].segment, Some(RfmSegment::ImportantValue));
    let rep = rfm(&odd, as_of(), &RfmParams { window_days: 0 });
    assert_eq!(rep.summary.scored, 0);
}

#[test]
fn segment_change_names_the_flipped_dimension_and_cut() {
    let before = rfm(&population(), as_of(), &RfmParams::default());
    // Member 1 now last bought 70 days ago; all else equal.
    // Recencies 70,10,20,40,60,100,150,200,300,364: descending 364,300,200,150,100,70,60,40,20,10.
    // R scores: 70 has 5 larger -> 3; 10 -> 5; 20 -> 5; 40 -> 4; 60 -> 4; 100 -> 3; 150,200 -> 2; 300,364 -> 1.
    // Sum 30, mean 3.0, high from 4, cut = position 5 (0-based) = 70 -> R high iff rec < 70.
    let mut pop = population();
    pop[0] = member(1, Some(70), 10, 5000);
    let after = rfm(&pop, as_of(), &RfmParams::default());
    assert_eq!(after.summary.recency.high_cut, Some(70));

    let ch = explain_segment_change(&before.members[0], &after.members[0], &after.summary);
    assert_eq!(ch.from, Some(RfmSegment::ImportantValue));
    assert_eq!(ch.to, Some(RfmSegment::ImportantKeep));
    assert_eq!(ch.flips.len(), 1);
    assert_eq!(ch.flips[0].dimension, RfmDimension::Recency);
    assert!(!ch.flips[0].cut_moved);
    assert_eq!(
        ch.text,
        "重要价值客户 → 重要保持客户: recency 5 → 70 days crossed 70 days (R high now needs < 70 days)"
    );

    // Member 5 did nothing (recency 60) but the cut moved from 60 to 70: general_keep -> general_value.
    let ch = explain_segment_change(&before.members[4], &after.members[4], &after.summary);
    assert_eq!(ch.to, Some(RfmSegment::GeneralValue));
    assert!(ch.flips[0].cut_moved);
    assert!(ch.text.contains("came under 70 days"), "{}", ch.text);
    assert!(ch.text.contains("the cut moved"), "{}", ch.text);

    // Unchanged, and leaving the window.
    let ch = explain_segment_change(&before.members[1], &after.members[1], &after.summary);
    assert!(ch.flips.is_empty());
    assert_eq!(ch.text, "unchanged: 重要发展客户");
    let ch = explain_segment_change(&before.members[9], &before.members[10], &before.summary);
    assert!(ch.text.starts_with("results are for different members"));
}

#[test]
fn monetary_flip_is_quoted_in_yuan() {
    let before = rfm(&population(), as_of(), &RfmParams::default());
    // Member 6 refunds down to 2000 yuan. M sorted: 50,100,200,800,1500,2000,2500,3000,3500,5000;
    // cuts at positions 1,3,5,7 = 100, 800, 2000, 3000 yuan; mean stays 3.0 -> high iff > 2000 yuan.
    let mut pop = population();
    pop[5] = member(6, Some(100), 8, 2000);
    let after = rfm(&pop, as_of(), &RfmParams::default());
    let ch = explain_segment_change(&before.members[5], &after.members[5], &after.summary);
    assert_eq!(ch.to, Some(RfmSegment::GeneralKeep));
    assert_eq!(
        ch.text,
        "重要保持客户 → 一般保持客户: spend ¥4000.00 → ¥2000.00 fell to or below ¥2000.00 (M high now needs > ¥2000.00)"
    );
}

#[test]
fn distinct_values_give_exact_quintiles() {
    // 1000 members with distinct orders 1..=1000: each score holds exactly 200.
    let ms: Vec<RfmInput> = (1..=1000).map(|i| member(i, Some(1), i as u32, i)).collect();
    let rep = rfm(&ms, as_of(), &RfmParams::default());
    let mut per = [0; 6];
    for m in &rep.members {
        per[usize::from(m.scores.unwrap().f)] += 1;
    }
    assert_eq!(&per[1..], &[200, 200, 200, 200, 200]);
    assert_eq!(rep.summary.frequency.score_cuts, vec![200, 400, 600, 800]);
}

mod oracle {
    use super::*;
    use proptest::prelude::*;

    /// The definition, computed naively in O(n²): score = 1 + floor(5 * b / n), b = members strictly worse;
    /// high = score strictly above the mean score.
    fn naive(ms: &[RfmInput]) -> Vec<(u8, u8, u8, RfmSegment)> {
        let rec = |m: &RfmInput| (as_of() - m.last_purchase.unwrap()).num_days();
        let n = ms.len();
        let score = |b: usize| (1 + 5 * b / n) as u8;
        let s: Vec<(u8, u8, u8)> = ms
            .iter()
            .map(|x| {
                let br = ms.iter().filter(|y| rec(y) > rec(x)).count();
                let bf = ms.iter().filter(|y| y.orders < x.orders).count();
                let bm = ms.iter().filter(|y| y.monetary_fen < x.monetary_fen).count();
                (score(br), score(bf), score(bm))
            })
            .collect();
        let mean = |f: fn(&(u8, u8, u8)) -> u8| s.iter().map(|t| f(t) as f64).sum::<f64>() / n as f64;
        let (mr, mf, mm) = (mean(|t| t.0), mean(|t| t.1), mean(|t| t.2));
        s.iter()
            .map(|&(r, f, m)| {
                (r, f, m, RfmSegment::from_flags(f64::from(r) > mr, f64::from(f) > mf, f64::from(m) > mm))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_naive_definition(
            rows in prop::collection::vec((0u64..40, 1u32..6, -3i64..8), 1..60)
        ) {
            let ms: Vec<RfmInput> = rows
                .iter()
                .enumerate()
                .map(|(i, &(r, f, m))| member(i as i64, Some(r), f, m))
                .collect();
            let rep = rfm(&ms, as_of(), &RfmParams::default());
            let want = naive(&ms);
            for (got, w) in rep.members.iter().zip(want) {
                let s = got.scores.unwrap();
                prop_assert_eq!((s.r, s.f, s.m, got.segment.unwrap()), w);
            }
            // The natural-unit high cut agrees with the high flag for every member.
            for got in &rep.members {
                let s = got.scores.unwrap();
                prop_assert_eq!(rep.summary.recency.is_high_value(got.recency_days.unwrap()), s.r_high);
                prop_assert_eq!(rep.summary.frequency.is_high_value(i64::from(got.orders)), s.f_high);
                prop_assert_eq!(rep.summary.monetary.is_high_value(got.monetary_fen), s.m_high);
            }
        }
    }
}
