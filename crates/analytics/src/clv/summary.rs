//! A member's purchase history reduced to the repeat-purchase summary (frequency, recency, age, monetary
//! value) that the BG/NBD and Gamma-Gamma models read.
//!
//! Convention (as in Fader, Hardie & Lee 2005 and lifetimes' `summary_data_from_transaction_data` with
//! `freq="D"`): purchases are aggregated by distinct purchase day; the first purchase day is the start of
//! the relationship and not counted as a repeat.
//! - frequency x = number of distinct purchase days − 1 (repeat purchase days);
//! - recency tₓ = days from the first to the last purchase day (0 when x = 0);
//! - age T = days from the first purchase day to `as_of`;
//! - monetary value = mean of the repeat days' totals in fen (the first day's total excluded), 0 when x = 0.
//!
//! Purchases dated after `as_of` are ignored; purchases on `as_of` count.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// One purchase (an order, or an order's paid amount) as the store aggregates it: the UTC day and the
/// amount in fen. Several purchases on one day form one purchase occasion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// UTC day of the purchase.
    pub day: NaiveDate,
    /// Amount in fen (may be zero for free orders).
    pub amount_fen: i64,
}

/// The per-member input of the CLV models (time unit: days). Build it with [`summarize`], or fill it
/// directly from a SQL aggregate that follows the same convention.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RepeatSummary {
    /// x: number of repeat purchase days.
    pub frequency: u32,
    /// tₓ: days between the first and the last purchase day.
    pub recency: f64,
    /// T: days between the first purchase day and the observation end (`as_of`).
    pub age: f64,
    /// Mean total of the repeat purchase days, in fen (0 when there is no repeat day).
    pub monetary_value: f64,
}

/// Reduce one member's purchases to a [`RepeatSummary`] as of a day (see the module doc for the
/// convention). `None` when the member has no purchase on or before `as_of`: such a member has not started
/// a purchase relationship and is outside these models. The input need not be sorted.
pub fn summarize(purchases: &[Purchase], as_of: NaiveDate) -> Option<RepeatSummary> {
    let mut days: Vec<(NaiveDate, i64)> =
        purchases.iter().filter(|p| p.day <= as_of).map(|p| (p.day, p.amount_fen)).collect();
    days.sort_unstable_by_key(|d| d.0);
    // Totals per distinct day (i128 so that no realistic sum overflows).
    let mut totals: Vec<(NaiveDate, i128)> = Vec::with_capacity(days.len());
    for (day, amount) in days {
        match totals.last_mut() {
            Some((d, t)) if *d == day => *t += i128::from(amount),
            _ => totals.push((day, i128::from(amount))),
        }
    }
    let (first, _) = *totals.first()?;
    let (last, _) = *totals.last()?;
    let repeat = &totals[1..];
    let frequency = u32::try_from(repeat.len()).unwrap_or(u32::MAX);
    let monetary_value =
        if repeat.is_empty() { 0.0 } else { repeat.iter().map(|(_, t)| *t as f64).sum::<f64>() / repeat.len() as f64 };
    Some(RepeatSummary {
        frequency,
        recency: (last - first).num_days() as f64,
        age: (as_of - first).num_days() as f64,
        monetary_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn p(day: &str, amount_fen: i64) -> Purchase {
        Purchase { day: d(day), amount_fen }
    }

    #[test]
    fn aggregates_by_day_and_excludes_the_first_day_from_monetary_value() {
        let ps = [
            p("2024-01-10", 5_000),
            p("2024-01-03", 1_000), // first day, two orders
            p("2024-01-03", 2_000),
            p("2024-01-10", 1_000),  // second day total 6,000
            p("2024-02-01", 3_000),  // third day
            p("2024-03-05", 99_999), // after as_of: ignored
        ];
        let s = summarize(&ps, d("2024-02-10")).unwrap();
        assert_eq!(s.frequency, 2);
        assert_eq!(s.recency, 29.0); // Jan 3 → Feb 1
        assert_eq!(s.age, 38.0); // Jan 3 → Feb 10
        assert_eq!(s.monetary_value, 4_500.0); // (6,000 + 3,000) / 2
    }

    #[test]
    fn single_day_and_purchase_on_as_of() {
        let s = summarize(&[p("2024-05-01", 700), p("2024-05-01", 300)], d("2024-05-01")).unwrap();
        assert_eq!(s, RepeatSummary { frequency: 0, recency: 0.0, age: 0.0, monetary_value: 0.0 });
    }

    #[test]
    fn no_purchase_before_as_of_is_none() {
        assert!(summarize(&[], d("2024-01-01")).is_none());
        assert!(summarize(&[p("2024-02-01", 100)], d("2024-01-01")).is_none());
    }
}
