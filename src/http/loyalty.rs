//! `/v1/members/{id}/points`: balances, and operator adjustments (idempotent by `Idempotency-Key`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller};
use crate::app::{PointsRefused, PointsView};
use crate::loyalty::ledger::{LedgerError, Wallet};
use crate::members::{MemberId, optional_text};
use crate::security::Permission;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_points)).routes(routes!(adjust_points))
}

/// A member's points: available, pending (return window), expiring soon, growth value.
#[utoipa::path(get, path = "/v1/members/{id}/points", tag = "loyalty", params(("id" = i64, Path)),
    responses((status = 200, body = PointsView), (status = 404, body = ErrorBody)))]
async fn get_points(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<PointsView>, ApiError> {
    caller.require(Permission::MemberRead)?;
    Ok(axum::Json(s.app.points(id).await?.ok_or_else(|| ApiError::not_found("member"))?))
}

/// Which wallet an adjustment changes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalletArg {
    #[default]
    Points,
    Growth,
}

/// An operator's adjustment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Positive to credit, negative to debit (a debit follows the configured negative-balance policy).
    pub amount: i64,
    /// Why, in words: kept on the entry and shown in the member's history.
    pub reason: String,
    #[serde(default)]
    pub wallet: WalletArg,
}

/// What an adjustment wrote, and the balances after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdjustResponse {
    /// Ledger entries of this adjustment (a retry returns the same ones).
    pub entries: usize,
    pub points: PointsView,
}

/// Adjust a member's points or growth value. Requires an `Idempotency-Key`: a retry changes nothing.
#[utoipa::path(post, path = "/v1/members/{id}/points/adjust", tag = "loyalty", params(("id" = i64, Path),
        ("Idempotency-Key" = String, Header, description = "Required: makes retries safe")),
    request_body = AdjustRequest,
    responses((status = 200, body = AdjustResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn adjust_points(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<MemberId>,
    ApiJson(req): ApiJson<AdjustRequest>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::PointsAdjust)?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header",
        )
        .with_field("Idempotency-Key"));
    };
    let reason =
        optional_text(Some(&req.reason), "reason", 200)?.ok_or_else(|| crate::error::Invalid::missing("reason"))?;
    let wallet = match req.wallet {
        WalletArg::Points => Wallet::Points,
        WalletArg::Growth => Wallet::Growth,
    };
    match s.app.adjust_points(id, wallet, req.amount, &reason, key, who).await? {
        Ok((entries, points)) => Ok(axum::Json(AdjustResponse { entries, points }).into_response()),
        Err(PointsRefused::NoSuchMember) => Err(ApiError::not_found("active member")),
        Err(PointsRefused::Ledger(LedgerError::Invalid(e))) => Err(e.into()),
        Err(PointsRefused::Ledger(LedgerError::KeyConflict { .. })) => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different adjustment",
        )),
        Err(PointsRefused::Ledger(e)) => Err(ApiError::conflict("points_refused", e.to_string())),
    }
}
