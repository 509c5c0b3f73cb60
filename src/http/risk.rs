//! Risk control (风控) over HTTP: the velocity-limit policy (`/v1/loyalty/risk-policy`), a member's flags,
//! and clearing one with a note. Flags are raised by earning and redemptions themselves; a member with an
//! open flag gets `409 blocked` on redemption until an operator clears it.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller};
use crate::loyalty::risk::{ClearRefusal, RiskPolicy};
use crate::members::MemberId;
use crate::security::Permission;
use crate::store::{ClearStored, RiskFlagRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(member_flags))
        .routes(routes!(clear_flag))
}

/// A risk flag: the limit that raised it, what was seen, and who cleared it and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiskFlagView {
    /// The flag's id (per member).
    pub id: i64,
    pub member_id: MemberId,
    /// The id of the velocity limit that raised it.
    pub rule: String,
    /// What was seen, in words ("6 redemptions on 2026-11-23 (Asia/Shanghai day), limit 5").
    pub detail: String,
    pub flagged_at: chrono::DateTime<chrono::Utc>,
    /// True until cleared; an open flag blocks redemptions.
    pub open: bool,
    pub cleared_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The key id of the operator who cleared it.
    pub cleared_by: Option<String>,
    /// Why it was cleared.
    pub note: Option<String>,
}

impl From<RiskFlagRecord> for RiskFlagView {
    fn from(r: RiskFlagRecord) -> Self {
        Self {
            id: r.id,
            member_id: r.member_id,
            open: r.flag.is_open(),
            rule: r.flag.rule,
            detail: r.flag.detail,
            flagged_at: r.flag.flagged_at,
            cleared_at: r.flag.cleared_at,
            cleared_by: r.flag.cleared_by,
            note: r.flag.note,
        }
    }
}

/// The velocity limits in force: earn events per hour, redemptions per day, points earned per day, or any
/// other limits of kind `earn`/`redeem`, measured in `events` or `points`, over a `sliding` window of minutes
/// or the `local_day`.
#[utoipa::path(get, path = "/v1/loyalty/risk-policy", tag = "loyalty", responses((status = 200, body = Object)))]
async fn get_policy(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<RiskPolicy>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.risk_policy().await?))
}

/// Replace the risk policy (validated; the error names the field, e.g. `limits[1].max`). Audited. Open
/// flags stay open.
#[utoipa::path(put, path = "/v1/loyalty/risk-policy", tag = "loyalty",
    request_body(content = Object, description = "A risk policy (see GET /v1/loyalty/risk-policy)"),
    responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
async fn put_policy(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<axum::Json<RiskPolicy>, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let policy: RiskPolicy = serde_path_to_error::deserialize(body).map_err(|e| {
        ApiError::from(crate::error::Invalid::new("invalid_policy", e.path().to_string(), e.inner().to_string()))
    })?;
    s.app.put_risk_policy(&policy, who).await??;
    Ok(axum::Json(policy))
}

/// A member's risk flags, newest first, open and cleared.
#[utoipa::path(get, path = "/v1/members/{id}/risk-flags", tag = "loyalty", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<RiskFlagView>)))]
async fn member_flags(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<Vec<RiskFlagView>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    Ok(axum::Json(s.app.risk_flags(id).await?.into_iter().map(Into::into).collect()))
}

/// Why a flag is cleared.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Required: why the activity is fine (kept with the flag and in the audit log).
    #[serde(default)]
    pub note: String,
}

/// Clear a member's risk flag with a note (operators). Audited. The same clear again answers with the
/// cleared flag; a flag cleared by someone else or with another note is `409 already_cleared`.
#[utoipa::path(post, path = "/v1/members/{id}/risk-flags/{flag_id}/clear", tag = "loyalty",
    params(("id" = i64, Path), ("flag_id" = i64, Path)), request_body = ClearRequest,
    responses((status = 200, body = RiskFlagView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn clear_flag(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, flag_id)): Path<(MemberId, i64)>,
    ApiJson(req): ApiJson<ClearRequest>,
) -> Result<axum::Json<RiskFlagView>, ApiError> {
    let who = caller.require(Permission::RiskReview)?;
    match s.app.clear_risk_flag(id, flag_id, &req.note, who).await? {
        ClearStored::Cleared(r) => Ok(axum::Json(r.into())),
        ClearStored::NoSuchFlag => Err(ApiError::not_found("risk flag")),
        ClearStored::Refused(ClearRefusal::Invalid(e)) => Err(e.into()),
        ClearStored::Refused(r) => Err(ApiError::conflict(r.code(), r.to_string())),
    }
}
