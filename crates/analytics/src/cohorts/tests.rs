use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn t(y: i32, m: u32, day: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, day, h, min, s).unwrap()
}

fn days(member_id: i64, ds: &[NaiveDate]) -> MemberPurchaseDays {
    MemberPurchaseDays { member_id, purchase_days: ds.to_vec() }
}

/// The hand-built shop of the module tests; every number below was worked out on paper.
fn shop() -> Vec<MemberPurchaseDays> {
    vec![
        // Nov cohort; 23:59:59 on 31 Dec stays in December, 00:00:00 on 1 Jan is January (year wrap).
        MemberPurchaseDays::from_times(
            1,
            [t(2024, 11, 30, 12, 0, 0), t(2024, 12, 31, 23, 59, 59), t(2025, 1, 1, 0, 0, 0)],
        ),
        // Nov cohort, two days in November, back in (partial) February.
        days(2, &[d(2024, 11, 5), d(2024, 11, 20), d(2025, 2, 10)]),
        // Dec cohort through its last second, nothing more.
        MemberPurchaseDays::from_times(3, [t(2024, 12, 31, 23, 59, 59)]),
        // Jan cohort; 31 Jan 23:59:59 is January, 1 Feb 00:00:00 is February.
        MemberPurchaseDays::from_times(4, [t(2025, 1, 1, 0, 0, 0), t(2025, 1, 31, 23, 59, 59), t(2025, 2, 1, 0, 0, 0)]),
        // Never bought.
        days(5, &[]),
        // Only bought after as_of.
        days(6, &[d(2025, 3, 1)]),
        // Nov cohort; the March purchase is after as_of and must be ignored.
        days(7, &[d(2024, 11, 10), d(2025, 3, 2)]),
        // Dec cohort, unsorted with duplicates.
        days(8, &[d(2025, 1, 20), d(2024, 12, 5), d(2025, 1, 20), d(2024, 12, 5)]),
    ]
}

fn actives(row: &CohortRow) -> Vec<u64> {
    row.cells.iter().map(|c| c.active).collect()
}

fn on_or_after(row: &CohortRow) -> Vec<u64> {
    row.cells.iter().map(|c| c.active_on_or_after).collect()
}

#[test]
fn from_times_uses_utc_days_at_the_month_and_year_boundaries() {
    let m = MemberPurchaseDays::from_times(
        9,
        [t(2025, 1, 1, 0, 0, 0), t(2024, 12, 31, 23, 59, 59), t(2024, 12, 31, 0, 0, 0)],
    );
    assert_eq!(m.purchase_days, vec![d(2024, 12, 31), d(2025, 1, 1)]);
}

#[test]
fn hand_built_matrix() {
    let r = cohort_report(&shop(), d(2025, 2, 15), &CohortParams::default());
    assert!(r.as_of_month_partial);
    assert_eq!(r.members_without_purchases, 2);
    let labels: Vec<&str> = r.cohorts.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["2024-11", "2024-12", "2025-01", "2025-02"]);
    let sizes: Vec<u64> = r.cohorts.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [3, 2, 1, 0]);

    let nov = &r.cohorts[0];
    assert_eq!(actives(nov), [3, 1, 1, 1]);
    assert_eq!(on_or_after(nov), [3, 2, 2, 1]);
    assert_eq!(nov.cells[0].active_share, Some(1.0));
    assert_eq!(nov.cells[1].active_share, Some(1.0 / 3.0));
    assert_eq!(nov.cells[2].on_or_after_share, Some(2.0 / 3.0));
    assert_eq!(nov.cells[3].month, d(2025, 2, 1));
    let partial: Vec<bool> = nov.cells.iter().map(|c| c.partial).collect();
    assert_eq!(partial, [false, false, false, true]);
    assert!(!nov.partial);

    let dec = &r.cohorts[1];
    assert_eq!(dec.cohort_month, d(2024, 12, 1));
    assert_eq!(actives(dec), [2, 1, 0]);
    assert_eq!(on_or_after(dec), [2, 1, 0]);

    let jan = &r.cohorts[2];
    assert_eq!(actives(jan), [1, 1]);
    assert_eq!(on_or_after(jan), [1, 1]);
    assert_eq!(jan.cells[1].active_share, Some(1.0));

    let feb = &r.cohorts[3];
    assert!(feb.partial);
    assert_eq!(feb.cells.len(), 1);
    assert_eq!(feb.cells[0].active, 0);
    assert_eq!(feb.cells[0].active_share, None);
    assert!(feb.cells[0].partial);
}

#[test]
fn month_end_as_of_is_not_partial_and_later_days_are_ignored() {
    let r = cohort_report(&shop(), d(2025, 1, 31), &CohortParams::default());
    assert!(!r.as_of_month_partial);
    assert!(r.cohorts.iter().all(|c| !c.partial));
    assert!(r.cohorts.iter().flat_map(|c| &c.cells).all(|c| !c.partial));
    let labels: Vec<&str> = r.cohorts.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["2024-11", "2024-12", "2025-01"]);
    // Member 2's February purchase is now in the future: Nov on-or-after at k=1 is member 1 only.
    assert_eq!(actives(&r.cohorts[0]), [3, 1, 1]);
    assert_eq!(on_or_after(&r.cohorts[0]), [3, 1, 1]);
    // Member 4's 1 Feb 00:00:00 purchase is after as_of too, so Jan is a one-month row of one member.
    assert_eq!(actives(&r.cohorts[2]), [1]);
}

#[test]
fn max_month_offset_truncates_cells_but_not_later_activity() {
    let params = CohortParams { max_month_offset: Some(1), ..CohortParams::default() };
    let r = cohort_report(&shop(), d(2025, 2, 15), &params);
    let nov = &r.cohorts[0];
    assert_eq!(actives(nov), [3, 1]);
    // Members 1 (Jan) and 2 (Feb) both returned in month 1 or later.
    assert_eq!(on_or_after(nov), [3, 2]);
}

#[test]
fn repurchase_rates_on_the_hand_built_shop() {
    let r = cohort_report(&shop(), d(2025, 2, 15), &CohortParams::default());
    let p = &r.repurchase;
    assert_eq!((p.buyers, p.repeat_buyers), (6, 4));
    assert_eq!(p.rate, Some(4.0 / 6.0));
    // Only members 2 (first 2024-11-05) and 7 (first 2024-11-10) had 90 days before 2025-02-15.
    assert_eq!((p.eligible_buyers, p.repeat_within_window), (2, 1));
    assert_eq!(p.rate_within_window, Some(0.5));
    assert!(p.explanation.contains("4 of 6 buyers"), "{}", p.explanation);
}

#[test]
fn repurchase_window_edges_are_inclusive() {
    let members = vec![
        // 2024 is a leap year: 1 Jan -> 31 Mar is 30 + 29 + 31 = 90 days.
        days(1, &[d(2024, 1, 1), d(2024, 3, 31)]),
        days(2, &[d(2024, 1, 1), d(2024, 4, 1)]),
        // First purchase exactly 90 days before as_of: eligible; 89 days: not.
        days(3, &[d(2024, 10, 2), d(2024, 10, 3)]),
        days(4, &[d(2024, 10, 3), d(2024, 10, 4)]),
    ];
    let r = cohort_report(&members, d(2024, 12, 31), &CohortParams::default());
    let p = &r.repurchase;
    assert_eq!(p.buyers, 4);
    assert_eq!(p.repeat_buyers, 4);
    assert_eq!(p.eligible_buyers, 3);
    assert_eq!(p.repeat_within_window, 2);
}

#[test]
fn empty_input_gives_an_empty_report() {
    let r = cohort_report(&[], d(2025, 2, 15), &CohortParams::default());
    assert!(r.cohorts.is_empty());
    assert_eq!(r.repurchase.buyers, 0);
    assert_eq!(r.repurchase.rate, None);
    assert_eq!(r.repurchase.rate_within_window, None);
    let r = cohort_report(&[days(1, &[])], d(2025, 2, 15), &CohortParams::default());
    assert!(r.cohorts.is_empty());
    assert_eq!(r.members_without_purchases, 1);
}

#[test]
fn params_deserialize_with_defaults() {
    let p: CohortParams = serde_json::from_str(r#"{"repurchase_window_days": 30}"#).unwrap();
    assert_eq!(p.repurchase_window_days, 30);
    assert_eq!(p.max_month_offset, None);
    assert!(serde_json::from_str::<CohortParams>(r#"{"window": 30}"#).is_err());
}

/// Brute-force oracle: for every cohort month and offset, scan all members.
fn oracle(members: &[MemberPurchaseDays], as_of: NaiveDate) -> Vec<(i64, Vec<u64>, Vec<u64>)> {
    let months: Vec<Vec<i64>> = members
        .iter()
        .map(|m| {
            let mut v: Vec<i64> = m.purchase_days.iter().filter(|d| **d <= as_of).map(|d| month_index(*d)).collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect();
    let end = month_index(as_of);
    let Some(start) = months.iter().filter_map(|v| v.first()).min().copied() else {
        return Vec::new();
    };
    (start..=end)
        .map(|c| {
            let cohort: Vec<&Vec<i64>> = months.iter().filter(|v| v.first() == Some(&c)).collect();
            let act = (c..=end).map(|m| cohort.iter().filter(|v| v.contains(&m)).count() as u64).collect();
            let after = (c..=end).map(|m| cohort.iter().filter(|v| v.iter().any(|x| *x >= m)).count() as u64).collect();
            (c, act, after)
        })
        .collect()
}

proptest! {
    #[test]
    fn matrices_match_a_brute_force_oracle(
        raw in prop::collection::vec(prop::collection::vec(0i64..800, 0..6), 0..40),
        as_of_off in 300i64..800,
    ) {
        let base = d(2023, 1, 1);
        let members: Vec<MemberPurchaseDays> = raw
            .iter()
            .enumerate()
            .map(|(i, v)| days(i as i64, &v.iter().map(|o| base + chrono::Duration::days(*o)).collect::<Vec<_>>()))
            .collect();
        let as_of = base + chrono::Duration::days(as_of_off);
        let r = cohort_report(&members, as_of, &CohortParams::default());
        let want = oracle(&members, as_of);
        prop_assert_eq!(r.cohorts.len(), want.len());
        for (row, (c, act, after)) in r.cohorts.iter().zip(want) {
            prop_assert_eq!(month_index(row.cohort_month), c);
            prop_assert_eq!(actives(row), act);
            prop_assert_eq!(on_or_after(row), after);
        }
    }
}
