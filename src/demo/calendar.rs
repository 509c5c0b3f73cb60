//! The shop's calendar: two years of days in Shanghai time, each weighted by weekday, month and the
//! Chinese retail festivals (年货节 and the Spring Festival lull, 38 女王节, 520, 618, 11.11, 双12), plus
//! the marketing campaigns sent around them. Activity is sampled from these weights, so seasonality in
//! the data comes from one place.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use rand::Rng;

/// Days of history.
pub const DAYS: usize = 730;

/// Shanghai is UTC+8 all year (no daylight saving).
const SHANGHAI_OFFSET_HOURS: i64 = 8;

/// Relative activity by hour of day (Shanghai): a lunch bump and the evening peak.
const HOURS: [f64; 24] = [
    0.6, 0.3, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.1, 1.3, 1.3, 1.2, 1.1, 1.1, 1.1, 1.1, 1.0, 1.0, 1.2, 1.6, 1.9,
    1.8, 1.2,
];

/// Spring Festival (春节) dates; lunar, so they are listed rather than computed.
const SPRING_FESTIVAL: [(i32, u32, u32); 14] = [
    (2019, 2, 5),
    (2020, 1, 25),
    (2021, 2, 12),
    (2022, 2, 1),
    (2023, 1, 22),
    (2024, 2, 10),
    (2025, 1, 29),
    (2026, 2, 17),
    (2027, 2, 6),
    (2028, 1, 26),
    (2029, 2, 13),
    (2030, 2, 3),
    (2031, 1, 23),
    (2032, 2, 11),
];

/// A marketing campaign sent to members on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub day: usize,
}

/// Two years of weighted days ending the day before `end`.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub start: NaiveDate,
    /// Festival multiplier per day (1.0 on an ordinary day).
    pub promo: Vec<f64>,
    /// Cumulative weights for everyday shopping.
    general: Vec<f64>,
    /// Cumulative weights for promotion hunters: festivals amplified, ordinary days nearly empty.
    deals: Vec<f64>,
    /// Cumulative weights for sign-ups: the member base grows over the two years.
    growth: Vec<f64>,
    pub campaigns: Vec<Campaign>,
}

fn spring_festival(year: i32) -> Option<NaiveDate> {
    SPRING_FESTIVAL.iter().find(|(y, _, _)| *y == year).and_then(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d))
}

/// The festival multiplier of a day.
pub fn festival(d: NaiveDate) -> f64 {
    let (m, day) = (d.month(), d.day());
    let mut p = match (m, day) {
        (3, 6..=8) => 2.0,
        (5, 20) => 1.5,
        (6, 1..=15) => 1.6,
        (6, 16 | 17) => 3.5,
        (6, 18) => 4.5,
        (10, 20..=31) | (11, 1..=10) => 1.5,
        (11, 11) => 7.0,
        (11, 12 | 13) => 1.4,
        (12, 12) => 2.5,
        _ => 1.0,
    };
    // The festival nearest this day may fall in the next calendar year (年货节 starts in January).
    for year in [d.year(), d.year() + 1] {
        if let Some(sf) = spring_festival(year) {
            let off = (d - sf).num_days();
            if (-21..=-8).contains(&off) {
                p *= 1.5;
            } else if (-7..=7).contains(&off) {
                p *= 0.45;
            }
        }
    }
    p
}

fn weekday_factor(d: NaiveDate) -> f64 {
    match d.weekday() {
        Weekday::Mon | Weekday::Tue => 0.95,
        Weekday::Wed => 0.97,
        Weekday::Thu => 1.0,
        Weekday::Fri => 1.05,
        Weekday::Sat => 1.12,
        Weekday::Sun => 1.1,
    }
}

fn month_factor(d: NaiveDate) -> f64 {
    [1.0, 0.9, 1.0, 0.95, 1.0, 1.05, 0.95, 0.95, 0.92, 1.0, 1.1, 1.1][d.month0() as usize]
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut cum = vec![0.0];
    let mut acc = 0.0;
    for w in weights {
        acc += w;
        cum.push(acc);
    }
    cum
}

impl Calendar {
    /// The 730 days before `end` (Shanghai dates), so nothing generated lies in the future when `end` is today.
    pub fn new(end: NaiveDate) -> Calendar {
        let start = end - Duration::days(DAYS as i64);
        let days: Vec<NaiveDate> = (0..DAYS).map(|i| start + Duration::days(i as i64)).collect();
        let promo: Vec<f64> = days.iter().map(|d| festival(*d)).collect();
        let base: Vec<f64> = days.iter().map(|d| weekday_factor(*d) * month_factor(*d)).collect();
        let general = cumulative(base.iter().zip(&promo).map(|(b, p)| b * p));
        let deals = cumulative(base.iter().zip(&promo).map(|(b, p)| if *p >= 1.4 { b * p * p } else { b * 0.12 }));
        let growth = cumulative(base.iter().zip(&promo).enumerate().map(|(i, (b, p))| {
            let trend = 0.5 + 1.5 * i as f64 / DAYS as f64;
            b * p.sqrt() * trend
        }));
        let mut campaigns = Vec::new();
        for (i, d) in days.iter().enumerate() {
            let id = match (d.month(), d.day()) {
                (3, 5) => Some(format!("cmp-{}-38", d.year())),
                (5, 28) => Some(format!("cmp-{}-618-warmup", d.year())),
                (6, 15) => Some(format!("cmp-{}-618", d.year())),
                (10, 22) => Some(format!("cmp-{}-1111-presale", d.year())),
                (11, 10) => Some(format!("cmp-{}-1111", d.year())),
                (12, 10) => Some(format!("cmp-{}-1212", d.year())),
                // 会员日: the 18th of every month.
                (_, 18) => Some(format!("cmp-{}-{:02}-member-day", d.year(), d.month())),
                _ => None,
            };
            if let Some(id) = id {
                campaigns.push(Campaign { id, day: i });
            }
            if spring_festival(d.year() + i32::from(d.month() > 6)).is_some_and(|sf| (sf - *d).num_days() == 20) {
                campaigns.push(Campaign { id: format!("cmp-{}-cny", d.year()), day: i });
            }
        }
        Calendar { start, promo, general, deals, growth, campaigns }
    }

    /// The Shanghai date of calendar day `day`.
    pub fn date(&self, day: usize) -> NaiveDate {
        self.start + Duration::days(day as i64)
    }

    /// Whether a day is in a festival sale (coupons and deeper discounts).
    pub fn is_sale(&self, day: usize) -> bool {
        self.promo.get(day).is_some_and(|p| *p >= 1.4)
    }

    /// A day in `[from, to)` drawn by everyday weights.
    pub fn everyday(&self, rng: &mut impl Rng, from: usize, to: usize) -> Option<usize> {
        sample(&self.general, rng, from, to)
    }

    /// A day in `[from, to)` drawn by deal-hunting weights.
    pub fn deal_day(&self, rng: &mut impl Rng, from: usize, to: usize) -> Option<usize> {
        sample(&self.deals, rng, from, to)
    }

    /// A sign-up day in `[from, to)`: more members join later and around festivals.
    pub fn signup_day(&self, rng: &mut impl Rng, from: usize, to: usize) -> Option<usize> {
        sample(&self.growth, rng, from, to)
    }

    /// Expected everyday weight mass of `[from, to)`, in ordinary-day units.
    pub fn mass(&self, from: usize, to: usize) -> f64 {
        let (from, to) = (from.min(DAYS), to.min(DAYS));
        if to <= from { 0.0 } else { self.general[to] - self.general[from] }
    }

    /// A moment on `day` at a time of day drawn from the hourly curve, in UTC.
    pub fn moment(&self, rng: &mut impl Rng, day: usize) -> DateTime<Utc> {
        let total: f64 = HOURS.iter().sum();
        let mut x = rng.random::<f64>() * total;
        let mut hour = 23;
        for (h, w) in HOURS.iter().enumerate() {
            if x < *w {
                hour = h;
                break;
            }
            x -= w;
        }
        let secs = hour as u32 * 3600 + rng.random_range(0..3600);
        self.at(day, secs)
    }

    /// `day` at `secs` seconds after local midnight, in UTC.
    pub fn at(&self, day: usize, secs: u32) -> DateTime<Utc> {
        let t = NaiveTime::from_num_seconds_from_midnight_opt(secs.min(86_399), 0).unwrap_or_default();
        (self.date(day).and_time(t) - Duration::hours(SHANGHAI_OFFSET_HOURS)).and_utc()
    }

    /// The first instant after the history: nothing generated may reach it.
    pub fn horizon(&self) -> DateTime<Utc> {
        self.at(DAYS - 1, 86_399)
    }
}

fn sample(cum: &[f64], rng: &mut impl Rng, from: usize, to: usize) -> Option<usize> {
    let (from, to) = (from.min(DAYS), to.min(DAYS));
    if to <= from || cum[to] - cum[from] <= 0.0 {
        return None;
    }
    let x = cum[from] + rng.random::<f64>() * (cum[to] - cum[from]);
    // The first day whose cumulative weight passes x.
    let i = cum[from..=to].partition_point(|c| *c <= x);
    Some((from + i).saturating_sub(1).clamp(from, to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn festivals_outweigh_ordinary_days() {
        let d = |m, day| NaiveDate::from_ymd_opt(2025, m, day).unwrap();
        assert!(festival(d(11, 11)) > festival(d(6, 18)));
        assert!(festival(d(6, 18)) > festival(d(9, 10)));
        assert!(festival(d(1, 29)) < 1.0, "Spring Festival lull");
        assert!(festival(d(1, 12)) > 1.0, "年货节");
    }

    #[test]
    fn samples_stay_in_range_and_follow_weights() {
        let cal = Calendar::new(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut by_month = [0u32; 12];
        for _ in 0..20_000 {
            let day = cal.everyday(&mut rng, 10, DAYS).unwrap();
            assert!((10..DAYS).contains(&day));
            by_month[cal.date(day).month0() as usize] += 1;
        }
        assert!(by_month[10] > by_month[8], "November {} vs September {}", by_month[10], by_month[8]);
        assert_eq!(cal.everyday(&mut rng, 5, 5), None);
        assert!(cal.horizon() < NaiveDate::from_ymd_opt(2026, 11, 23).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc());
    }
}
