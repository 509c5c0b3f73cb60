//! Member preferences (偏好): category, brand and price-band affinity, promotion sensitivity (营销敏感度)
//! and campaign response.
//!
//! # Affinity
//! Each order line up to `as_of` weighs `amount_fen · 0.5^(age / half_life_days)`, with `age = as_of − day`
//! in days: spend, discounted so that a purchase one half-life ago counts half as much as one today
//! (exponential decay, default half-life 90 days). Lines with a zero or negative amount (fully discounted
//! gifts, adjustments) weigh nothing. An item's affinity is its share of the member's total weight:
//!
//! * categories at each configured depth of the path ("beauty/skincare/serum" at depth 1 is "beauty", at
//!   depth 2 "beauty/skincare"; a shorter path is used whole; defaults depths 1 and 2);
//! * brands ("(no brand)" for an empty brand);
//! * price bands of the line's unit price, by band edges in fen (lower edge inclusive; defaults
//!   10000, 30000, 100000 fen give "<¥100", "¥100–¥300", "¥300–¥1000", "≥¥1000").
//!
//! The top `top_k` items are reported (heaviest first, ties by key) and the rest folded into `other`, so
//! the reported shares plus `other_share` sum to 1 (up to rounding) whenever the member has any weight.
//!
//! # Promotion sensitivity and campaign response
//! Promotion sensitivity is the share of the member's orders up to `as_of` that used a coupon or had a
//! discount, with the counts. Campaign response rate is the share of campaign touches (campaign_open plus
//! campaign_click events) followed by an order within the caller's response window (N days, counted by
//! the store); click rate is clicks per open. Rates are None when their denominator is zero.
//!
//! # Cost
//! O(k log k) for a member with k lines (one sort of borrowed keys per dimension).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::rfm::yuan;

/// Errors from the preferences kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreferenceError {
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParam {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parameters of the preference kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreferenceParams {
    /// Half-life of a line's weight in days (default 90, > 0).
    pub half_life_days: f64,
    /// Category path depths to report (default `[1, 2]`; each ≥ 1).
    pub category_depths: Vec<usize>,
    /// Price-band edges on unit price in fen, strictly increasing (default `[10000, 30000, 100000]`).
    pub price_band_edges_fen: Vec<i64>,
    /// How many items to report per dimension before folding the rest into "other" (default 5).
    pub top_k: usize,
}

impl Default for PreferenceParams {
    fn default() -> Self {
        Self {
            half_life_days: 90.0,
            category_depths: vec![1, 2],
            price_band_edges_fen: vec![10_000, 30_000, 100_000],
            top_k: 5,
        }
    }
}

impl PreferenceParams {
    /// Checks every parameter is in range.
    pub fn validate(&self) -> Result<(), PreferenceError> {
        let bad = |name, reason| Err(PreferenceError::InvalidParam { name, reason });
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return bad("half_life_days", "must be a positive number");
        }
        if self.category_depths.contains(&0) {
            return bad("category_depths", "depths start at 1");
        }
        if self.price_band_edges_fen.windows(2).any(|w| w[0] >= w[1]) {
            return bad("price_band_edges_fen", "must be strictly increasing");
        }
        Ok(())
    }

    /// Labels of the price bands, in band order: "<¥100", "¥100–¥300", …, "≥¥1000".
    pub fn price_band_labels(&self) -> Vec<String> {
        let e = &self.price_band_edges_fen;
        if e.is_empty() {
            return vec!["all prices".to_string()];
        }
        let mut v = Vec::with_capacity(e.len() + 1);
        v.push(format!("<{}", short_yuan(e[0])));
        for w in e.windows(2) {
            v.push(format!("{}–{}", short_yuan(w[0]), short_yuan(w[1])));
        }
        v.push(format!("≥{}", short_yuan(e[e.len() - 1])));
        v
    }
}

/// "¥100" for whole yuan, "¥99.50" otherwise.
fn short_yuan(fen: i64) -> String {
    if fen % 100 == 0 { format!("¥{}", fen / 100) } else { yuan(fen) }
}

/// One order line as the store reads it (product lines; fees and gift cards left out by the caller). The
/// texts are borrowed: a shop's lines name a few thousand SKUs, and tens of millions of lines would otherwise
/// copy their category and brand each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceLine<'a> {
    /// Order day (UTC).
    pub day: NaiveDate,
    /// The SKU's category path, "/"-separated.
    pub category_path: &'a str,
    /// The SKU's brand ("" if none).
    pub brand: &'a str,
    /// Line amount after discounts, fen.
    pub amount_fen: i64,
    /// Unit price, fen.
    pub unit_price_fen: i64,
}

/// One paid order: its day and whether it used a coupon or had a discount > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceOrder {
    /// Order day (UTC).
    pub day: NaiveDate,
    /// Coupon used or discount_total > 0.
    pub promoted: bool,
}

/// Campaign events counted by the store for one member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignActivity {
    /// campaign_open events.
    pub opens: u32,
    /// campaign_click events.
    pub clicks: u32,
    /// Opens and clicks followed by an order within the response window (at most opens + clicks).
    pub responded: u32,
}

/// Everything the preference kernel reads for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceInput<'a> {
    /// The member.
    pub member_id: i64,
    /// Order lines (any order; lines after `as_of` are ignored).
    #[serde(borrow)]
    pub lines: Vec<PreferenceLine<'a>>,
    /// Orders (lines after `as_of` are ignored).
    pub orders: Vec<PreferenceOrder>,
    /// Campaign opens/clicks and responses.
    pub campaigns: CampaignActivity,
}

/// One reported item of an affinity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AffinityItem {
    /// Category key, brand, or price-band label.
    pub key: String,
    /// Decayed spend weight (fen-equivalent).
    pub weight: f64,
    /// Share of the total weight.
    pub share: f64,
}

/// Top items of one dimension plus the folded rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affinity {
    /// Heaviest first.
    pub items: Vec<AffinityItem>,
    /// Share of everything not in `items`.
    pub other_share: f64,
    /// How many distinct keys were folded into other.
    pub other_keys: usize,
    /// Total decayed weight (0 when the member has no weighted lines).
    pub total_weight: f64,
}

/// Category affinity at one path depth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryAffinity {
    /// Path depth (1 = top level).
    pub depth: usize,
    /// The affinity.
    pub affinity: Affinity,
}

/// Share of orders that used a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PromotionSensitivity {
    /// Orders up to `as_of`.
    pub orders: u32,
    /// Of which with a coupon or discount.
    pub promoted_orders: u32,
    /// `promoted_orders / orders`; None without orders.
    pub share: Option<f64>,
}

/// Campaign response figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CampaignResponse {
    /// Opens plus clicks.
    pub touches: u32,
    /// Touches followed by an order in the response window.
    pub responded: u32,
    /// `responded / touches` (capped at 1); None without touches.
    pub response_rate: Option<f64>,
    /// `clicks / opens` (capped at 1); None without opens.
    pub click_rate: Option<f64>,
}

/// A member's preferences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preferences {
    /// The member.
    pub member_id: i64,
    /// One entry per configured depth, in the configured order.
    pub categories: Vec<CategoryAffinity>,
    /// Brand affinity.
    pub brands: Affinity,
    /// Price-band affinity (keys are the band labels).
    pub price_bands: Affinity,
    /// Promotion sensitivity.
    pub promotion: PromotionSensitivity,
    /// Campaign response.
    pub campaigns: CampaignResponse,
    /// "mostly beauty (56%), brand A (50%), ¥100–¥300 (31%); 1 of 4 orders promoted (25%)".
    pub reason: String,
}

/// The first `depth` segments of a category path (borrowed).
fn category_at(path: &str, depth: usize) -> &str {
    match path.match_indices('/').nth(depth.saturating_sub(1)) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// Refills `pairs` with (key, weight) for every weighted line.
fn fill<'a, 's: 'a>(
    pairs: &mut Vec<(&'a str, f64)>,
    weighted: &[(&'a PreferenceLine<'s>, f64)],
    key: impl Fn(&'a PreferenceLine<'s>) -> &'a str,
) {
    pairs.clear();
    pairs.extend(weighted.iter().map(|&(l, w)| (key(l), w)));
}

/// Sums weights per key and keeps the top k. `pairs` is reused scratch (sorted in place).
fn affinity(pairs: &mut [(&str, f64)], top_k: usize) -> Affinity {
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut merged: Vec<(&str, f64)> = Vec::new();
    for &(k, w) in pairs.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == k => last.1 += w,
            _ => merged.push((k, w)),
        }
    }
    merged.retain(|&(_, w)| w > 0.0);
    merged.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let total: f64 = merged.iter().map(|&(_, w)| w).sum();
    if total <= 0.0 {
        return Affinity { items: Vec::new(), other_share: 0.0, other_keys: 0, total_weight: 0.0 };
    }
    let k = top_k.min(merged.len());
    let items = merged[..k]
        .iter()
        .map(|&(key, w)| AffinityItem { key: key.to_string(), weight: w, share: w / total })
        .collect();
    let other: f64 = merged[k..].iter().map(|&(_, w)| w).sum();
    Affinity { items, other_share: other / total, other_keys: merged.len() - k, total_weight: total }
}

fn rate(num: u32, den: u32) -> Option<f64> {
    (den > 0).then(|| (f64::from(num) / f64::from(den)).min(1.0))
}

/// Computes one member's preferences as of a day; see the module doc.
pub fn preferences(
    input: &PreferenceInput<'_>,
    as_of: NaiveDate,
    params: &PreferenceParams,
) -> Result<Preferences, PreferenceError> {
    params.validate()?;
    let labels = params.price_band_labels();
    let edges = &params.price_band_edges_fen;
    // (line, weight) for lines that count.
    let weighted: Vec<(&PreferenceLine<'_>, f64)> = input
        .lines
        .iter()
        .filter(|l| l.day <= as_of && l.amount_fen > 0)
        .map(|l| {
            let age = (as_of - l.day).num_days() as f64;
            (l, l.amount_fen as f64 * (-age / params.half_life_days).exp2())
        })
        .collect();
    let mut pairs: Vec<(&str, f64)> = Vec::with_capacity(weighted.len());

    let mut categories = Vec::with_capacity(params.category_depths.len());
    for &depth in &params.category_depths {
        fill(&mut pairs, &weighted, |l| {
            let c = category_at(l.category_path, depth);
            if c.is_empty() { "(uncategorized)" } else { c }
        });
        categories.push(CategoryAffinity { depth, affinity: affinity(&mut pairs, params.top_k) });
    }
    fill(&mut pairs, &weighted, |l| if l.brand.is_empty() { "(no brand)" } else { l.brand });
    let brands = affinity(&mut pairs, params.top_k);
    fill(&mut pairs, &weighted, |l| {
        let band = edges.partition_point(|&e| e <= l.unit_price_fen);
        labels[band].as_str()
    });
    let price_bands = affinity(&mut pairs, params.top_k);

    let (orders, promoted) = input
        .orders
        .iter()
        .filter(|o| o.day <= as_of)
        .fold((0u32, 0u32), |(n, p), o| (n.saturating_add(1), p.saturating_add(u32::from(o.promoted))));
    let promotion = PromotionSensitivity { orders, promoted_orders: promoted, share: rate(promoted, orders) };
    let c = input.campaigns;
    let touches = c.opens.saturating_add(c.clicks);
    let campaigns = CampaignResponse {
        touches,
        responded: c.responded.min(touches),
        response_rate: rate(c.responded, touches),
        click_rate: rate(c.clicks, c.opens),
    };

    let top =
        |a: &Affinity, prefix: &str| a.items.first().map(|i| format!("{prefix}{} ({:.0}%)", i.key, i.share * 100.0));
    let mut parts: Vec<String> =
        [categories.first().and_then(|c| top(&c.affinity, "mostly ")), top(&brands, "brand "), top(&price_bands, "")]
            .into_iter()
            .flatten()
            .collect();
    if parts.is_empty() {
        parts.push("no purchases to weigh".to_string());
    }
    let promo = match promotion.share {
        Some(s) => format!("{promoted} of {orders} orders promoted ({:.0}%)", s * 100.0),
        None => "no orders".to_string(),
    };
    let reason = format!("{}; {promo}", parts.join(", "));
    Ok(Preferences { member_id: input.member_id, categories, brands, price_bands, promotion, campaigns, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use chrono::Days;

    fn as_of() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()
    }
    fn line<'a>(age: u64, path: &'a str, brand: &'a str, amount: i64, unit: i64) -> PreferenceLine<'a> {
        PreferenceLine {
            day: as_of().checked_sub_days(Days::new(age)).unwrap(),
            category_path: path,
            brand,
            amount_fen: amount,
            unit_price_fen: unit,
        }
    }
    fn shares(a: &Affinity) -> Vec<(&str, f64)> {
        a.items.iter().map(|i| (i.key.as_str(), i.share)).collect()
    }

    /// Half-life 90: ages 0, 90, 180 weigh 1, 1/2, 1/4, so the lines below all weigh 20000 except
    /// L4 (10000 at age 90 -> 5000) and L5 (15000 at age 0). Total 80000.
    fn input() -> PreferenceInput<'static> {
        let future =
            PreferenceLine { day: NaiveDate::from_ymd_opt(2024, 7, 2).unwrap(), ..line(0, "toys", "Z", 999_999, 100) };
        PreferenceInput {
            member_id: 9,
            lines: vec![
                line(0, "beauty/skincare/serum", "A", 20_000, 20_000),
                line(90, "beauty/makeup/lipstick", "B", 40_000, 40_000),
                line(180, "home/kitchen", "A", 80_000, 8_000),
                line(90, "beauty/skincare/toner", "C", 10_000, 5_000),
                line(0, "food", "", 15_000, 150_000),
                line(0, "gifts", "G", 0, 10_000), // zero amount: no weight
                future,                           // after as_of: ignored
            ],
            orders: vec![
                PreferenceOrder { day: as_of(), promoted: true },
                PreferenceOrder { day: as_of(), promoted: false },
                PreferenceOrder { day: as_of(), promoted: false },
                PreferenceOrder { day: as_of(), promoted: false },
            ],
            campaigns: CampaignActivity { opens: 8, clicks: 2, responded: 1 },
        }
    }

    #[test]
    fn decayed_shares_by_hand() {
        let p = PreferenceParams::default();
        let r = preferences(&input(), as_of(), &p).unwrap();
        // Depth 1: beauty 20000+20000+5000 = 45000 (0.5625), home 20000 (0.25), food 15000 (0.1875).
        let c1 = &r.categories[0].affinity;
        assert_eq!(r.categories[0].depth, 1);
        let want = [("beauty", 0.5625), ("home", 0.25), ("food", 0.1875)];
        for ((k, s), (wk, ws)) in shares(c1).into_iter().zip(want) {
            assert_eq!(k, wk);
            assert_relative_eq!(s, ws, epsilon = 1e-12);
        }
        assert_relative_eq!(c1.total_weight, 80_000.0, epsilon = 1e-6);
        assert_eq!(c1.other_share, 0.0);
        // Depth 2: beauty/skincare 25000, then a 20000 tie broken by key: beauty/makeup before home/kitchen.
        let c2 = shares(&r.categories[1].affinity);
        assert_eq!(
            c2.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec!["beauty/skincare", "beauty/makeup", "home/kitchen", "food"]
        );
        assert_relative_eq!(c2[0].1, 0.3125, epsilon = 1e-12);
        // Brands: A 40000 (0.5), B 20000 (0.25), (no brand) 15000 (0.1875), C 5000 (0.0625).
        let b = shares(&r.brands);
        assert_eq!(b[0].0, "A");
        assert_relative_eq!(b[0].1, 0.5, epsilon = 1e-12);
        assert_eq!(b[2].0, "(no brand)");
        assert_relative_eq!(b[3].1, 0.0625, epsilon = 1e-12);
        // Price bands by unit price: <¥100 L3+L4 = 25000, ¥100–¥300 L1 20000, ¥300–¥1000 L2 20000, ≥¥1000 L5.
        let pb = shares(&r.price_bands);
        assert_eq!(pb.iter().map(|x| x.0).collect::<Vec<_>>(), vec!["<¥100", "¥100–¥300", "¥300–¥1000", "≥¥1000"]);
        assert_relative_eq!(pb[0].1, 0.3125, epsilon = 1e-12);
        // Promotion and campaigns.
        assert_eq!(r.promotion.orders, 4);
        assert_eq!(r.promotion.promoted_orders, 1);
        assert_eq!(r.promotion.share, Some(0.25));
        assert_eq!(r.campaigns.touches, 10);
        assert_eq!(r.campaigns.response_rate, Some(0.1));
        assert_eq!(r.campaigns.click_rate, Some(0.25));
        assert_eq!(r.reason, "mostly beauty (56%), brand A (50%), <¥100 (31%); 1 of 4 orders promoted (25%)");
    }

    #[test]
    fn top_k_folds_into_other_and_sums_to_one() {
        let p = PreferenceParams { top_k: 2, ..PreferenceParams::default() };
        let r = preferences(&input(), as_of(), &p).unwrap();
        let a = &r.categories[1].affinity;
        assert_eq!(a.items.len(), 2);
        assert_eq!(a.other_keys, 2);
        // 1 - 0.3125 - 0.25 = 0.4375.
        assert_relative_eq!(a.other_share, 0.4375, epsilon = 1e-12);
        let sum: f64 = a.items.iter().map(|i| i.share).sum::<f64>() + a.other_share;
        assert_relative_eq!(sum, 1.0, epsilon = 1e-12);
    }

    #[test]
    fn half_life_decay_by_hand() {
        // Two equal lines, 0 and 45 days old: weights 1 and 2^-0.5 = 0.70711; shares 0.58579 and 0.41421.
        let inp = PreferenceInput {
            member_id: 1,
            lines: vec![line(0, "a", "x", 10_000, 1), line(45, "b", "y", 10_000, 1)],
            orders: vec![],
            campaigns: CampaignActivity::default(),
        };
        let r = preferences(&inp, as_of(), &PreferenceParams::default()).unwrap();
        let s = shares(&r.categories[0].affinity);
        assert_eq!(s[0].0, "a");
        assert_relative_eq!(s[0].1, 1.0 / (1.0 + 0.5f64.sqrt()), epsilon = 1e-12);
        assert_relative_eq!(s[1].1, 0.414_213_562_373, epsilon = 1e-9);
        // Unit price exactly on an edge falls in the upper band.
        let inp = PreferenceInput { lines: vec![line(0, "a", "x", 10_000, 10_000)], ..inp };
        let r = preferences(&inp, as_of(), &PreferenceParams::default()).unwrap();
        assert_eq!(r.price_bands.items[0].key, "¥100–¥300");
    }

    #[test]
    fn empty_and_bad_params() {
        let inp = PreferenceInput {
            member_id: 1,
            lines: vec![],
            orders: vec![],
            campaigns: CampaignActivity { opens: 0, clicks: 3, responded: 9 },
        };
        let r = preferences(&inp, as_of(), &PreferenceParams::default()).unwrap();
        assert!(r.brands.items.is_empty());
        assert_eq!(r.brands.other_share, 0.0);
        assert_eq!(r.promotion.share, None);
        assert_eq!(r.campaigns.click_rate, None);
        assert_eq!(r.campaigns.response_rate, Some(1.0));
        assert_eq!(r.reason, "no purchases to weigh; no orders");
        for bad in [
            PreferenceParams { half_life_days: 0.0, ..PreferenceParams::default() },
            PreferenceParams { category_depths: vec![0], ..PreferenceParams::default() },
            PreferenceParams { price_band_edges_fen: vec![100, 100], ..PreferenceParams::default() },
        ] {
            assert!(preferences(&inp, as_of(), &bad).is_err());
        }
        assert_eq!(category_at("a/b/c", 2), "a/b");
        assert_eq!(category_at("a", 2), "a");
        let no_edges = PreferenceParams { price_band_edges_fen: vec![], ..PreferenceParams::default() };
        let inp = PreferenceInput { lines: vec![line(0, "", "x", 100, 1)], ..inp };
        let r = preferences(&inp, as_of(), &no_edges).unwrap();
        assert_eq!(r.price_bands.items[0].key, "all prices");
        assert_eq!(r.categories[0].affinity.items[0].key, "(uncategorized)");
    }
}
