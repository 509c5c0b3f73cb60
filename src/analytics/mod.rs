//! Behaviour analytics: one run turns the shop's orders, events and ledger into what an operator acts on —
//! RFM segments, lifecycle stages, CLV and P(alive), churn risk, purchase cycles, preferences, tags,
//! clusters, basket rules, funnels, paths, cohorts and KPI alerts.
//!
//! The models are the pure kernels of the `huiyuan-analytics` crate. This module is the pure pipeline
//! around them: from a [`Dataset`] (what the store aggregated, cut at `as_of`) and the previous run's
//! member states to an [`AnalyticsOutput`] the store commits in one transaction. It reads and writes no
//! database; its only I/O is spilling members' profile bodies to temporary files, which keeps a large shop's
//! run within memory. The app layer runs it on a blocking thread.
//!
//! Architecture invariant: nothing here reads data after `as_of` — the dataset is cut by the store's
//! queries, and every kernel receives `as_of` as a parameter, never the clock.

mod bodies;
mod dataset;
mod pipeline;

use serde::{Deserialize, Serialize};

pub use dataset::{Dataset, Grouped, RawRows};
pub use huiyuan_analytics as kernels;
pub use pipeline::run;

/// Every parameter of the analysis (`[analytics]` in the configuration); each model's own table holds its
/// parameters, with the defaults its documentation gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsParams {
    /// The server runs the analysis every day at this hour of the business time zone (0–23); `-1` turns the
    /// schedule off (`huiyuan analyze` still works).
    pub schedule_hour: i32,
    /// Per-member results are kept for this many runs (aggregates and change logs are kept for all).
    pub keep_runs: i64,
    /// Engagement features count events of the last this many days.
    pub engagement_days: u32,
    /// Funnels, paths and campaign responses read events of the last this many days.
    pub journey_days: u32,
    /// KPI series (and the anomaly detector's history) cover this many days.
    pub kpi_days: u32,
    /// A campaign open or click counts as answered if the member orders within this many days.
    pub campaign_response_days: i64,
    pub rfm: kernels::rfm::RfmParams,
    pub lifecycle: kernels::lifecycle::LifecycleParams,
    pub cycle: kernels::cycle::CycleParams,
    pub clv: kernels::clv::ClvParams,
    pub churn: kernels::churn::ChurnParams,
    /// Engagement history the churn model reads (it trains at `as_of` − 2 × horizon with its windows).
    pub churn_history_days: u32,
    pub clusters: kernels::clusters::ClusterParams,
    /// Basket rules mine the orders of the RFM window.
    pub basket: kernels::basket::BasketParams,
    pub preferences: kernels::preferences::PreferenceParams,
    pub cohorts: kernels::cohorts::CohortParams,
    /// The funnels each run reports (named); default: product view → add to cart → checkout → purchase.
    pub funnels: Vec<NamedFunnel>,
    pub paths: kernels::funnels::paths::PathParams,
    pub anomalies: kernels::kpis::AnomalyParams,
    /// Rule tags: a condition over the member features listed in ARCHITECTURE.md, recomputed each run.
    pub rule_tags: Vec<kernels::tags::RuleTagDef>,
    /// Keyword tags found in members' reviews and notes.
    pub keyword_tags: Vec<kernels::tags::KeywordTagDef>,
    pub keywords: kernels::tags::KeywordParams,
    pub tag_weights: kernels::tags::TagWeightParams,
}

/// Stored event rows (grouped by member, as the store returns them) in the form the funnel and path
/// kernels read.
pub fn funnel_events(rows: &[crate::store::EventRow]) -> Vec<kernels::funnels::Event> {
    rows.iter()
        .map(|e| kernels::funnels::Event {
            member_id: e.member_id,
            at: e.at,
            event_type: e.event_type.to_string(),
            session_id: e.session_id.as_deref().map(str::to_string),
            sku: e.sku.as_deref().map(str::to_string),
            properties: Vec::new(),
        })
        .collect()
}

/// A funnel the scheduled run reports, under a name. Each member's progress through it goes into their
/// profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunnel {
    pub name: String,
    /// Tag members who stalled part-way, so they can be acted on (加购未买: carted, did not buy).
    #[serde(default)]
    pub stalled_tag: Option<StalledTag>,
    #[serde(flatten)]
    pub definition: kernels::funnels::FunnelDefinition,
}

/// A model tag (category `funnel`, recomputed each run) for members whose best attempt reached step
/// `from_step` (0-based) or further but not the last step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StalledTag {
    pub tag: String,
    pub from_step: usize,
}

/// The shop funnel every brand asks for first.
fn default_funnels() -> Vec<NamedFunnel> {
    use kernels::funnels::{FunnelDefinition, FunnelStep};
    let steps = ["product_view", "add_to_cart", "checkout", "purchase"].map(FunnelStep::on).to_vec();
    vec![NamedFunnel {
        name: "view_to_purchase".into(),
        stalled_tag: Some(StalledTag { tag: "加购未买".into(), from_step: 1 }),
        definition: FunnelDefinition::new(steps),
    }]
}

impl Default for AnalyticsParams {
    fn default() -> Self {
        Self {
            schedule_hour: 3,
            keep_runs: 3,
            engagement_days: 90,
            journey_days: 30,
            kpi_days: 120,
            campaign_response_days: 7,
            rfm: Default::default(),
            lifecycle: Default::default(),
            cycle: Default::default(),
            clv: Default::default(),
            churn: Default::default(),
            churn_history_days: 400,
            // Silhouette alone often prefers two groups, too coarse to act on: start the search at three.
            clusters: kernels::clusters::ClusterParams { k_min: 3, ..Default::default() },
            basket: Default::default(),
            preferences: Default::default(),
            cohorts: Default::default(),
            funnels: default_funnels(),
            paths: Default::default(),
            anomalies: Default::default(),
            rule_tags: default_rule_tags(),
            keyword_tags: default_keyword_tags(),
            keywords: Default::default(),
            tag_weights: Default::default(),
        }
    }
}

/// Rule tags a brand starts from (edit them in `[[analytics.rule_tags]]`).
fn default_rule_tags() -> Vec<kernels::tags::RuleTagDef> {
    let t = |tag: &str, category: &str, condition: &str| kernels::tags::RuleTagDef {
        tag: tag.into(),
        category: category.into(),
        condition: condition.into(),
        strength: 1.0,
    };
    vec![
        t("高消费", "value", "monetary_365d_fen >= 300000"),
        t("复购客", "value", "orders_365d >= 2"),
        t("促销敏感", "behaviour", "orders_365d >= 2 and promo_share >= 0.5"),
        t("高互动", "behaviour", "recent_events >= 30"),
        t("老会员", "basic", "tenure_days >= 730"),
    ]
}

/// Keyword tags a beauty-and-tea brand starts from (edit them in `[[analytics.keyword_tags]]`).
fn default_keyword_tags() -> Vec<kernels::tags::KeywordTagDef> {
    let t = |tag: &str, category: &str, words: &[&str]| kernels::tags::KeywordTagDef {
        tag: tag.into(),
        category: category.into(),
        keywords: words.iter().map(|w| w.to_string()).collect(),
        strength: 0.5,
    };
    vec![
        t("敏感肌", "interest", &["敏感肌", "皮肤敏感", "容易过敏", "sensitive skin"]),
        t("油性肌", "interest", &["油性皮肤", "油皮", "出油", "oily skin"]),
        t("送礼", "interest", &["送礼", "送人", "礼物", "gift"]),
    ]
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{model}: {message}")]
    Model { model: &'static str, message: String },
    #[error("encoding results: {0}")]
    Encode(#[from] serde_json::Error),
    /// Members' profile bodies are spilled to temporary files (`TMPDIR`) during a run.
    #[error("spilling member results to a temporary file: {0}")]
    Spill(#[from] std::io::Error),
    /// A read the run makes once it is under way (the stored tags, read when the tags stage needs them).
    #[error("reading {what}: {message}")]
    Read { what: &'static str, message: String },
}

impl AnalyticsError {
    fn model(model: &'static str, e: impl std::fmt::Display) -> Self {
        AnalyticsError::Model { model, message: e.to_string() }
    }
}

/// Print a run summary for people (the CLI's non-JSON output): one line per model.
pub fn print_summary(summary: &serde_json::Value) {
    if let Some(map) = summary.as_object() {
        for (model, v) in map {
            println!("{model:<14} {}", one_line(v));
        }
    }
}

fn one_line(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            m.iter().map(|(k, v)| format!("{k}={}", one_line(v))).collect::<Vec<_>>().join(" ")
        }
        serde_json::Value::Array(a) => format!("[{}]", a.iter().map(one_line).collect::<Vec<_>>().join(", ")),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
