//! Behaviour analytics over HTTP: the runs, each model's aggregate result from the newest run, and the
//! member 360 profile that puts identity, loyalty and analytics on one page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller};
use crate::app::AppError;
use crate::app::{PointsView, TierView};
use crate::commerce::OrderView;
use crate::events::EventView;
use crate::members::{MemberId, MemberView};
use crate::security::Permission;
use crate::store::{AnalyticsChange, AnalyticsRun, MemberTagRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(runs, start_run))
        .routes(routes!(run))
        .routes(routes!(clv_model))
        .routes(routes!(model_result))
        .routes(routes!(funnel_query))
        .routes(routes!(profile))
        .routes(routes!(put_tag, delete_tag))
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

/// What to analyse.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Compute as if today were this day, reading nothing later (default: yesterday, UTC: the last
    /// complete day).
    #[schema(value_type = Option<String>, format = Date)]
    pub as_of: Option<NaiveDate>,
}

/// Start an analysis run now (beside the nightly schedule); answers 202 with the `running` run at once.
/// Poll `GET /v1/analytics/runs/{id}` for `done` or `failed`. One run at a time: 409
/// `analysis_running` while another is in progress. Admin and operator.
#[utoipa::path(post, path = "/v1/analytics/runs", tag = "analytics", request_body = StartRun,
    responses((status = 202, body = AnalyticsRun), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn start_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<StartRun>,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Permission::AnalyticsRun)?;
    let today = s.app.now().date_naive();
    let as_of = input.as_of.unwrap_or_else(|| today.pred_opt().unwrap_or(today));
    if as_of > today {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "future_date",
            format!("as_of {as_of} is after today ({today}, UTC): a run cannot read days that have not happened"),
        )
        .with_field("as_of"));
    }
    match s.app.start_analysis(as_of).await {
        Ok(run) => Ok((StatusCode::ACCEPTED, axum::Json(run)).into_response()),
        Err(AppError::AnalysisBusy) => Err(ApiError::conflict(
            "analysis_running",
            "an analysis run is already in progress; poll GET /v1/analytics/runs and start again when it ends",
        )),
        Err(e) => Err(e.into()),
    }
}

/// One analysis run, whatever its status (`running`, `done`, `failed` with its error). Analyst role and up.
#[utoipa::path(get, path = "/v1/analytics/runs/{id}", tag = "analytics", params(("id" = i64, Path)),
    responses((status = 200, body = AnalyticsRun), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<AnalyticsRun>, ApiError> {
    caller.require(Permission::AnalyticsRead)?;
    s.app.analytics_run(id).await?.map(axum::Json).ok_or_else(|| ApiError::not_found("analysis run"))
}

/// An ad-hoc funnel over stored events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// `steps` (each `event_type`, optional `sku`, `properties` filters and `max_secs_from_previous`),
    /// `conversion_window_secs` (default 7 days), `exclusions` (`event_type`, `after_step`, `before_step`),
    /// `counting` (`member` or `session`), as in the `[[analytics.funnels]]` configuration.
    #[schema(value_type = Object)]
    pub funnel: crate::analytics::kernels::funnels::FunnelDefinition,
    /// First day of events read (UTC; default: 30 days before `to`).
    #[schema(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// Last day of events read, included (UTC; default: today).
    #[schema(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
}

/// The funnel's report: members (or sessions) entering each step, conversion, median time between steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelQueryResponse {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub events_read: usize,
    #[schema(value_type = Object)]
    pub report: crate::analytics::kernels::funnels::FunnelReport,
}

/// Compute a funnel now over the events of `[from, to]` (at most 366 days), with the semantics of the
/// nightly funnels (ARCHITECTURE.md). Writes nothing. Analyst role and up.
#[utoipa::path(post, path = "/v1/analytics/funnels/query", tag = "analytics", request_body = FunnelQuery,
    responses((status = 200, body = FunnelQueryResponse), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn funnel_query(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(q): ApiJson<FunnelQuery>,
) -> Result<axum::Json<FunnelQueryResponse>, ApiError> {
    caller.require(Permission::AnalyticsRead)?;
    let to = q.to.unwrap_or_else(|| s.app.now().date_naive());
    let from = q.from.unwrap_or_else(|| to - chrono::Days::new(29));
    let bad = |field: &str, code: &str, msg: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg).with_field(field)
    };
    if from > to {
        return Err(bad("from", "invalid_range", format!("from {from} is after to {to}")));
    }
    let days = (to - from).num_days() + 1;
    if days > crate::app::FUNNEL_QUERY_MAX_DAYS {
        return Err(bad(
            "from",
            "range_too_long",
            format!("{days} days from {from} to {to}; at most {} per query", crate::app::FUNNEL_QUERY_MAX_DAYS),
        ));
    }
    match s.app.funnel_query(q.funnel, from, to).await? {
        Ok(r) => {
            Ok(axum::Json(FunnelQueryResponse { from: r.from, to: r.to, events_read: r.events_read, report: r.report }))
        }
        Err(e) => {
            let field = e.field().map_or_else(|| "funnel".to_string(), |f| format!("funnel.{f}"));
            Err(bad(&field, "invalid_funnel", e.to_string()))
        }
    }
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

/// An operator's tag on a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagInput {
    /// Why the member carries it (kept with the tag and in the audit log).
    pub reason: String,
    /// Tag category (its decay policy under `tag_weights`; default `manual`).
    #[serde(default)]
    pub category: Option<String>,
}

/// Printable text of at most `max` characters, trimmed and required; the error names `field`.
fn label(value: &str, field: &str, max: usize) -> Result<String, ApiError> {
    let text = crate::members::optional_text(Some(value), field, max)?;
    Ok(text.ok_or_else(|| crate::error::Invalid::missing(field))?)
}

/// Tag a member by hand (source `manual`, weight 1; re-tagging renews it). Manual tags sit beside the
/// computed ones in the profile and are never removed by a run. Audited. Admin, operator and integration.
#[utoipa::path(put, path = "/v1/members/{id}/tags/{tag}", tag = "members",
    params(("id" = i64, Path), ("tag" = String, Path)), request_body = TagInput,
    responses((status = 200, body = MemberTagRow), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn put_tag(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, tag)): Path<(MemberId, String)>,
    ApiJson(input): ApiJson<TagInput>,
) -> Result<axum::Json<MemberTagRow>, ApiError> {
    let who = caller.require(Permission::MembersWrite)?;
    let tag = label(&tag, "tag", 64)?;
    let category = label(input.category.as_deref().unwrap_or("manual"), "category", 32)?;
    let reason = label(&input.reason, "reason", 500)?;
    let row = s.app.tag_member(id, &tag, &category, &reason, who).await?;
    row.map(axum::Json).ok_or_else(|| ApiError::not_found("member"))
}

/// Remove a manual tag (computed tags follow their rules and models). Audited. 204, or 404 when the member
/// has no such manual tag.
#[utoipa::path(delete, path = "/v1/members/{id}/tags/{tag}", tag = "members",
    params(("id" = i64, Path), ("tag" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_tag(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, tag)): Path<(MemberId, String)>,
) -> Result<StatusCode, ApiError> {
    let who = caller.require(Permission::MembersWrite)?;
    if s.app.untag_member(id, tag.trim(), who).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("manual tag"))
    }
}
