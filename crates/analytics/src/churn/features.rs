//! Behaviour features at a cutoff day and the churn label after it.
//!
//! The feature builder reads only records dated on or before the cutoff; the labeller reads only
//! purchases in `(cutoff, cutoff + horizon]`. Those two facts are what keeps training honest, and the
//! tests in `super::tests` append future records to prove it.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{ChurnHistory, ChurnParams, EngagementKind};

/// Number of model features (see [`FEATURES`]).
pub const N_FEATURES: usize = 19;

/// The model's features, in the order of the feature vector.
///
/// Counts and money enter as `ln(1 + x)` so a few heavy buyers do not dominate the standardization;
/// trends are differences of those logs, i.e. `ln((1 + recent) / (1 + prior))`, symmetric and finite
/// when either window is empty. Recency and tenure enter in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    RecencyDays,
    OrdersWindow,
    OrdersTrend,
    SpendWindow,
    SpendTrend,
    OrdersLifetime,
    ViewsShort,
    ViewsWindow,
    CartsShort,
    CartsWindow,
    CheckInsShort,
    CheckInsWindow,
    ClicksShort,
    ClicksWindow,
    PointsEarned,
    PointsRedeemed,
    RefundsWindow,
    RefundShare,
    TenureDays,
}

/// Feature order of the vector the model sees.
pub(crate) const FEATURES: [Feature; N_FEATURES] = [
    Feature::RecencyDays,
    Feature::OrdersWindow,
    Feature::OrdersTrend,
    Feature::SpendWindow,
    Feature::SpendTrend,
    Feature::OrdersLifetime,
    Feature::ViewsShort,
    Feature::ViewsWindow,
    Feature::CartsShort,
    Feature::CartsWindow,
    Feature::CheckInsShort,
    Feature::CheckInsWindow,
    Feature::ClicksShort,
    Feature::ClicksWindow,
    Feature::PointsEarned,
    Feature::PointsRedeemed,
    Feature::RefundsWindow,
    Feature::RefundShare,
    Feature::TenureDays,
];

impl Feature {
    /// Stable machine name; window lengths are part of the name so a stored model says what it saw.
    pub(crate) fn name(self, p: &ChurnParams) -> String {
        let w = p.window_days;
        let s = p.engagement_short_days;
        match self {
            Feature::RecencyDays => "recency_days".into(),
            Feature::OrdersWindow => format!("orders_last_{w}d"),
            Feature::OrdersTrend => format!("orders_trend_last_{w}d_vs_prior_{w}d"),
            Feature::SpendWindow => format!("spend_last_{w}d"),
            Feature::SpendTrend => format!("spend_trend_last_{w}d_vs_prior_{w}d"),
            Feature::OrdersLifetime => "orders_lifetime".into(),
            Feature::ViewsShort => format!("views_last_{s}d"),
            Feature::ViewsWindow => format!("views_last_{w}d"),
            Feature::CartsShort => format!("carts_last_{s}d"),
            Feature::CartsWindow => format!("carts_last_{w}d"),
            Feature::CheckInsShort => format!("check_ins_last_{s}d"),
            Feature::CheckInsWindow => format!("check_ins_last_{w}d"),
            Feature::ClicksShort => format!("campaign_clicks_last_{s}d"),
            Feature::ClicksWindow => format!("campaign_clicks_last_{w}d"),
            Feature::PointsEarned => format!("points_earned_last_{w}d"),
            Feature::PointsRedeemed => format!("points_redeemed_last_{w}d"),
            Feature::RefundsWindow => format!("refunds_last_{w}d"),
            Feature::RefundShare => "refund_share_lifetime".into(),
            Feature::TenureDays => "tenure_days".into(),
        }
    }

    /// The phrase an operator reads when this feature pushes a member towards churn. It states the
    /// member's actual value, so it stays true whatever sign the model learned.
    pub(crate) fn phrase(self, f: &ChurnFeatures, p: &ChurnParams) -> String {
        let w = p.window_days;
        let s = p.engagement_short_days;
        match self {
            Feature::RecencyDays => format!("no purchase for {} days", f.recency_days),
            Feature::OrdersWindow => format!("{} in the last {w} days", count(f.orders_window, "order")),
            Feature::OrdersTrend => change("orders", f.orders_window as f64, f.orders_prior as f64, w),
            Feature::SpendWindow => format!("spent ¥{} in the last {w} days", yuan(f.spend_window_fen)),
            Feature::SpendTrend => change("spend", f.spend_window_fen as f64, f.spend_prior_fen as f64, w),
            Feature::OrdersLifetime => format!("{} in total", count(f.orders_lifetime, "order")),
            Feature::ViewsShort => engagement(f.short.views, "product view", s),
            Feature::ViewsWindow => engagement(f.window.views, "product view", w),
            Feature::CartsShort => engagement(f.short.carts, "add-to-cart", s),
            Feature::CartsWindow => engagement(f.window.carts, "add-to-cart", w),
            Feature::CheckInsShort => engagement(f.short.check_ins, "check-in", s),
            Feature::CheckInsWindow => engagement(f.window.check_ins, "check-in", w),
            Feature::ClicksShort => engagement(f.short.campaign_clicks, "campaign click", s),
            Feature::ClicksWindow => engagement(f.window.campaign_clicks, "campaign click", w),
            Feature::PointsEarned if f.points_earned == 0 => {
                format!("no points earned in the last {w} days")
            }
            Feature::PointsEarned => {
                format!("earned {} points in the last {w} days", f.points_earned)
            }
            Feature::PointsRedeemed if f.points_redeemed == 0 => {
                format!("no points redeemed in the last {w} days")
            }
            Feature::PointsRedeemed => {
                format!("redeemed {} points in the last {w} days", f.points_redeemed)
            }
            Feature::RefundsWindow => {
                format!("{} in the last {w} days", count(f.refunds_window, "refund"))
            }
            Feature::RefundShare => format!("{:.0}% of lifetime spend refunded", 100.0 * refund_share(f)),
            Feature::TenureDays => format!("member for {} days", f.tenure_days),
        }
    }
}

fn count(n: u64, noun: &str) -> String {
    match n {
        0 => format!("no {noun}s"),
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

fn engagement(n: u64, noun: &str, days: u32) -> String {
    format!("{} in the last {days} days", count(n, noun))
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

fn change(what: &str, recent: f64, prior: f64, w: u32) -> String {
    if prior <= 0.0 && recent <= 0.0 {
        format!("no {what} in the last {w} days nor the {w} before")
    } else if prior <= 0.0 {
        format!("{what} only in the last {w} days, none in the {w} before")
    } else {
        let pct = 100.0 * (recent - prior) / prior;
        let dir = if pct < 0.0 { "down" } else { "up" };
        format!("{what} {dir} {:.0}% vs previous {w} days", pct.abs())
    }
}

fn refund_share(f: &ChurnFeatures) -> f64 {
    if f.spend_lifetime_fen <= 0 {
        0.0
    } else {
        (f.refunded_lifetime_fen as f64 / f.spend_lifetime_fen as f64).clamp(0.0, 1.0)
    }
}

/// Engagement counts by kind over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngagementCounts {
    /// Product and page views.
    pub views: u64,
    /// Add-to-cart events.
    pub carts: u64,
    /// Daily check-ins.
    pub check_ins: u64,
    /// Clicks on campaign messages.
    pub campaign_clicks: u64,
}

impl EngagementCounts {
    fn add(&mut self, kind: EngagementKind, n: u64) {
        match kind {
            EngagementKind::View => self.views += n,
            EngagementKind::Cart => self.carts += n,
            EngagementKind::CheckIn => self.check_ins += n,
            EngagementKind::CampaignClick => self.campaign_clicks += n,
        }
    }
}

/// A member's behaviour summarised at a cutoff day, in readable units; the model's vector is derived
/// from it and the reasons quote it. Windows are `(cutoff − days, cutoff]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnFeatures {
    /// Days from the last purchase on or before the cutoff to the cutoff.
    pub recency_days: i64,
    /// Purchases in the last `window_days`.
    pub orders_window: u64,
    /// Purchases in the `window_days` before that.
    pub orders_prior: u64,
    /// Purchases on or before the cutoff.
    pub orders_lifetime: u64,
    /// Spend (fen) in the last `window_days`.
    pub spend_window_fen: i64,
    /// Spend (fen) in the `window_days` before that.
    pub spend_prior_fen: i64,
    /// Spend (fen) on or before the cutoff.
    pub spend_lifetime_fen: i64,
    /// Engagement in the last `engagement_short_days`.
    pub short: EngagementCounts,
    /// Engagement in the last `window_days`.
    pub window: EngagementCounts,
    /// Points credited in the last `window_days`.
    pub points_earned: i64,
    /// Points debited (redeemed or expired) in the last `window_days`, as a positive number.
    pub points_redeemed: i64,
    /// Refunds in the last `window_days`.
    pub refunds_window: u64,
    /// Refunded amount (fen) on or before the cutoff.
    pub refunded_lifetime_fen: i64,
    /// Days from registration to the cutoff (0 if registered later).
    pub tenure_days: i64,
}

pub(crate) fn day_number(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce())
}

/// Features at `cutoff`, or `None` when the member has no purchase on or before it (outside the
/// population: a member who never bought cannot lapse). Reads nothing dated after `cutoff`.
pub fn churn_features(h: &ChurnHistory, cutoff: NaiveDate, p: &ChurnParams) -> Option<ChurnFeatures> {
    let c = day_number(cutoff);
    let w = i64::from(p.window_days);
    let s = i64::from(p.engagement_short_days);
    // `age` = days before the cutoff; 0 is the cutoff day itself. Window of w days: age < w.
    let mut last_purchase: Option<i64> = None;
    let mut f = ChurnFeatures {
        recency_days: 0,
        orders_window: 0,
        orders_prior: 0,
        orders_lifetime: 0,
        spend_window_fen: 0,
        spend_prior_fen: 0,
        spend_lifetime_fen: 0,
        short: EngagementCounts::default(),
        window: EngagementCounts::default(),
        points_earned: 0,
        points_redeemed: 0,
        refunds_window: 0,
        refunded_lifetime_fen: 0,
        tenure_days: (c - day_number(h.registered_on)).max(0),
    };
    for pu in &h.purchases {
        let age = c - day_number(pu.day);
        if age < 0 {
            continue;
        }
        let amount = pu.amount_fen.max(0);
        last_purchase = Some(last_purchase.map_or(age, |a: i64| a.min(age)));
        f.orders_lifetime += 1;
        f.spend_lifetime_fen = f.spend_lifetime_fen.saturating_add(amount);
        if age < w {
            f.orders_window += 1;
            f.spend_window_fen = f.spend_window_fen.saturating_add(amount);
        } else if age < 2 * w {
            f.orders_prior += 1;
            f.spend_prior_fen = f.spend_prior_fen.saturating_add(amount);
        }
    }
    f.recency_days = last_purchase?;
    for r in &h.refunds {
        let age = c - day_number(r.day);
        if age < 0 {
            continue;
        }
        f.refunded_lifetime_fen = f.refunded_lifetime_fen.saturating_add(r.amount_fen.max(0));
        if age < w {
            f.refunds_window += 1;
        }
    }
    for e in &h.engagement {
        let age = c - day_number(e.day);
        if age < 0 || age >= w.max(s) {
            continue;
        }
        let n = u64::from(e.count);
        if age < w {
            f.window.add(e.kind, n);
        }
        if age < s {
            f.short.add(e.kind, n);
        }
    }
    for m in &h.points {
        let age = c - day_number(m.day);
        if !(0..w).contains(&age) {
            continue;
        }
        if m.points >= 0 {
            f.points_earned = f.points_earned.saturating_add(m.points);
        } else {
            f.points_redeemed = f.points_redeemed.saturating_add(m.points.saturating_neg());
        }
    }
    Some(f)
}

fn ln1p_count(n: u64) -> f64 {
    (n as f64).ln_1p()
}

fn ln1p_yuan(fen: i64) -> f64 {
    (fen.max(0) as f64 / 100.0).ln_1p()
}

impl ChurnFeatures {
    /// The model's feature vector, in [`FEATURES`] order.
    pub(crate) fn vector(&self) -> [f64; N_FEATURES] {
        let mut v = [0.0; N_FEATURES];
        for (slot, feature) in v.iter_mut().zip(FEATURES) {
            *slot = match feature {
                Feature::RecencyDays => self.recency_days as f64,
                Feature::OrdersWindow => ln1p_count(self.orders_window),
                Feature::OrdersTrend => ln1p_count(self.orders_window) - ln1p_count(self.orders_prior),
                Feature::SpendWindow => ln1p_yuan(self.spend_window_fen),
                Feature::SpendTrend => ln1p_yuan(self.spend_window_fen) - ln1p_yuan(self.spend_prior_fen),
                Feature::OrdersLifetime => ln1p_count(self.orders_lifetime),
                Feature::ViewsShort => ln1p_count(self.short.views),
                Feature::ViewsWindow => ln1p_count(self.window.views),
                Feature::CartsShort => ln1p_count(self.short.carts),
                Feature::CartsWindow => ln1p_count(self.window.carts),
                Feature::CheckInsShort => ln1p_count(self.short.check_ins),
                Feature::CheckInsWindow => ln1p_count(self.window.check_ins),
                Feature::ClicksShort => ln1p_count(self.short.campaign_clicks),
                Feature::ClicksWindow => ln1p_count(self.window.campaign_clicks),
                Feature::PointsEarned => ln1p_count(self.points_earned.max(0) as u64),
                Feature::PointsRedeemed => ln1p_count(self.points_redeemed.max(0) as u64),
                Feature::RefundsWindow => ln1p_count(self.refunds_window),
                Feature::RefundShare => refund_share(self),
                Feature::TenureDays => self.tenure_days as f64,
            };
        }
        v
    }
}

/// The churn label at `cutoff`: `Some(true)` when the member has a purchase on or before the cutoff
/// and none in `(cutoff, cutoff + horizon_days]`; `None` when the member is outside the population (no
/// purchase on or before the cutoff). Reads no purchase after `cutoff + horizon_days`.
pub fn churn_label(h: &ChurnHistory, cutoff: NaiveDate, horizon_days: u32) -> Option<bool> {
    let c = day_number(cutoff);
    let end = c + i64::from(horizon_days);
    let mut before = false;
    let mut during = false;
    for pu in &h.purchases {
        let d = day_number(pu.day);
        if d <= c {
            before = true;
        } else if d <= end {
            during = true;
        }
    }
    before.then_some(!during)
}
