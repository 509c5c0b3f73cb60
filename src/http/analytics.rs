//! Behaviour analytics over HTTP: the runs, each model's aggregate result from the newest run, and the
//! member 360 profile that puts identity, loyalty and analytics on one page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState, Caller};
use crate::app::{PointsView, TierView};
use crate::commerce::OrderView;
use crate::events::EventView;
use crate::members::{MemberId, MemberView};
use crate::security::Permission;
use crate::store::{AnalyticsChange, AnalyticsRun, MemberTagRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(runs))
        .routes(routes!(clv_model))
        .routes(routes!(model_result))
        .routes(routes!(profile))
}

/// The aggregates of one model from the newest finished run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelResult {
    pub run: AnalyticsRun,
    /// The model's result as the run stored it (its shape per model is described in ARCHITECTURE.md).
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// The models whose aggregates `/v1/analytics/{model}` serves.
pub const MODELS: [&str; 11] =
    ["rfm", "lifecycle", "clv", "churn", "clusters", "cohorts", "funnels", "paths", "basket-rules", "kpis", "cycle"];

/// The analysis runs, newest first (status `running`, `done` or `failed`, with each run's summary).
/// Analyst role and up.
#[utoipa::path(get, path = "/v1/analytics/runs", tag = "analytics",
    responses((status = 200, body = Vec<AnalyticsRun>), (status = 403, body = ErrorBody)))]
async fn runs(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<AnalyticsRun>>, ApiError> {
    caller.require(Permission::AnalyticsRead)?;
    Ok(axum::Json(s.app.store.analytics_runs(50).await?))
}

async fn result_of(s: &AppState, stored: &str) -> Result<axum::Json<ModelResult>, ApiError> {
    match s.app.analytics_result(stored).await? {
        Some((run, result)) => Ok(axum::Json(ModelResult { run, result })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_analysis",
            "no finished analysis run yet: run `huiyuan analyze` or wait for the scheduled run",
        )),
    }
}

/// The fitted CLV models: BG/NBD and Gamma-Gamma parameters, log-likelihoods, convergence and fit
/// diagnostics. Analyst role and up.
#[utoipa::path(get, path = "/v1/analytics/clv/model", tag = "analytics",
    responses((status = 200, body = ModelResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn clv_model(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<ModelResult>, ApiError> {
    caller.require(Permission::AnalyticsRead)?;
    result_of(&s, "clv_model").await
}

/// One model's aggregates from the newest run: `rfm` (segments, score cuts), `lifecycle` (stages and the
/// transition matrix from the previous run), `clv`, `churn` (held-out ROC-AUC and PR-AUC, coefficients),
/// `clusters`, `cohorts`, `funnels`, `paths`, `basket-rules`, `kpis` (daily series and alerts), `cycle`.
/// Analyst role and up.
#[utoipa::path(get, path = "/v1/analytics/{model}", tag = "analytics", params(("model" = String, Path)),
    responses((status = 200, body = ModelResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn model_result(
    State(s): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
) -> Result<axum::Json<ModelResult>, ApiError> {
    caller.require(Permission::AnalyticsRead)?;
    if !MODELS.contains(&model.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no analytics model `{model}`; known: {}", MODELS.join(", ")),
        )
        .with_field("model"));
    }
    result_of(&s, &model.replace('-', "_")).await
}

/// The member 360.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberProfile {
    /// Identities and attributes, masked or omitted per the caller's role.
    pub member: MemberView,
    pub points: Option<PointsView>,
    pub tier: Option<TierView>,
    /// The run the analytic parts come from (absent before the first run).
    pub analysis_run: Option<AnalyticsRun>,
    /// RFM, lifecycle (fixed thresholds and probabilistic), CLV and P(alive), churn risk with top reasons,
    /// purchase cycle and next expected purchase, preferences, cluster — each with its reason.
    #[schema(value_type = Option<Object>)]
    pub analytics: Option<serde_json::Value>,
    /// Segment and stage changes, newest first, with their reasons.
    pub changes: Vec<AnalyticsChange>,
    /// Tags by weight (weights decay with each tag category's half-life).
    pub tags: Vec<MemberTagRow>,
    pub recent_orders: Vec<OrderView>,
    pub recent_events: Vec<EventView>,
}

/// The member 360: identities (masked per role), attributes, tier and points, RFM scores and segment,
/// lifecycle stage, CLV and P(alive), churn risk with top reasons, purchase cycle, preferences, tags with
/// weights, recent orders and events.
#[utoipa::path(get, path = "/v1/members/{id}/profile", tag = "members", params(("id" = i64, Path)),
    responses((status = 200, body = MemberProfile), (status = 404, body = ErrorBody)))]
async fn profile(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<MemberProfile>, ApiError> {
    let who = caller.require(Permission::MemberRead)?;
    let member = s.app.member_view(id, who).await?.ok_or_else(|| ApiError::not_found("member"))?;
    let points = s.app.points(id).await?;
    let tier = s.app.tier_view(id).await?;
    let (latest, changes, tags) = s.app.member_analytics(id).await?;
    let recent_orders = s.app.store.member_orders(id, None, 10).await?;
    let recent_events = s.app.store.member_events(id, 20).await?;
    let (analysis_run, analytics) = match latest {
        Some((run, row)) => (Some(run), Some(row.body)),
        None => (None, None),
    };
    Ok(axum::Json(MemberProfile {
        member,
        points,
        tier,
        analysis_run,
        analytics,
        changes,
        tags,
        recent_orders,
        recent_events,
    }))
}
