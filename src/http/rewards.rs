//! The rewards catalog (`/v1/rewards`) and redemptions: `POST /v1/rewards/{id}/redemptions` with an
//! `Idempotency-Key`, a member's redemptions, and cancelling one.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller};
use crate::app::Redeemed;
use crate::loyalty::ledger::LedgerError;
use crate::loyalty::rewards::{Redemption, Reward};
use crate::members::MemberId;
use crate::security::Permission;
use crate::store::{RedeemFailure, RewardRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rewards))
        .routes(routes!(get_reward, put_reward))
        .routes(routes!(redeem))
        .routes(routes!(member_redemptions))
        .routes(routes!(cancel_redemption))
}

/// A reward as the API shows it: its definition and what is left of its stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct RewardView {
    /// The definition (the same document `PUT /v1/rewards/{id}` takes).
    #[schema(value_type = Object)]
    pub reward: Reward,
    /// Units left; absent when unlimited.
    pub stock_left: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<RewardRecord> for RewardView {
    fn from(r: RewardRecord) -> Self {
        Self { reward: r.reward, stock_left: r.stock_left, created_at: r.created_at, updated_at: r.updated_at }
    }
}

/// The rewards catalog.
#[utoipa::path(get, path = "/v1/rewards", tag = "rewards", responses((status = 200, body = Vec<RewardView>)))]
async fn list_rewards(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<RewardView>>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.store.rewards().await?.into_iter().map(Into::into).collect()))
}

/// One reward.
#[utoipa::path(get, path = "/v1/rewards/{id}", tag = "rewards", params(("id" = String, Path)),
    responses((status = 200, body = RewardView), (status = 404, body = ErrorBody)))]
async fn get_reward(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<RewardView>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.store.reward(&id).await?.ok_or_else(|| ApiError::not_found("reward"))?.into()))
}

/// Create or replace a reward. A changed `stock` moves what is left by the difference.
#[utoipa::path(put, path = "/v1/rewards/{id}", tag = "rewards", params(("id" = String, Path)),
    request_body(content = Object, description = "A reward: id, name, kind, points, cash, stock, limits, windows, tiers, active"),
    responses((status = 200, body = RewardView), (status = 422, body = ErrorBody)))]
async fn put_reward(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<axum::Json<RewardView>, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let reward: Reward = serde_path_to_error::deserialize(body).map_err(|e| {
        ApiError::from(crate::error::Invalid::new("invalid_reward", e.path().to_string(), e.inner().to_string()))
    })?;
    if reward.id != id {
        return Err(crate::error::Invalid::new("id_mismatch", "id", "the reward's `id` must match the path").into());
    }
    Ok(axum::Json(s.app.put_reward(&reward, who).await??.into()))
}

/// Who redeems.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub member_id: MemberId,
}

/// A redemption record.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedemptionView {
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub redemption: Redemption,
}

fn failure(f: RedeemFailure) -> ApiError {
    match f {
        RedeemFailure::Refused(r) => ApiError::conflict(r.code(), r.to_string()),
        RedeemFailure::CancelRefused(r) => ApiError::conflict(r.code(), r.to_string()),
        RedeemFailure::Ledger(LedgerError::Invalid(e)) => e.into(),
        RedeemFailure::Ledger(LedgerError::Insufficient { available, requested }) => {
            ApiError::conflict("insufficient_points", format!("{available} points available, {requested} needed"))
        }
        RedeemFailure::Ledger(e) => ApiError::conflict("points_refused", e.to_string()),
        RedeemFailure::Coupon { code, message } => ApiError::conflict(&code, message),
    }
}

fn answer(r: Redeemed) -> Result<Response, ApiError> {
    match r {
        Redeemed::Created(r) => Ok((StatusCode::CREATED, axum::Json(RedemptionView { redemption: r })).into_response()),
        Redeemed::Replayed(r) => Ok((StatusCode::OK, axum::Json(RedemptionView { redemption: r })).into_response()),
        Redeemed::KeyReused => {
            Err(ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used for another reward"))
        }
        Redeemed::NoSuchReward => Err(ApiError::not_found("reward")),
        Redeemed::NoSuchMember => Err(ApiError::not_found("active member")),
        Redeemed::NoSuchRedemption => Err(ApiError::not_found("redemption")),
        Redeemed::Failed(f) => Err(failure(f)),
    }
}

/// Redeem a reward for a member: points debited (earliest-expiring first), stock taken and the redemption
/// recorded in one transaction. Requires an `Idempotency-Key`: a retry answers 200 with the same
/// redemption; refusals are 409 with a code (`insufficient_points`, `out_of_stock`, `limit_reached`,
/// `outside_window`, `tier_not_allowed`, `blocked`, `inactive`).
#[utoipa::path(post, path = "/v1/rewards/{id}/redemptions", tag = "rewards", params(("id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "Required: makes retries safe")),
    request_body = RedeemRequest,
    responses((status = 201, body = RedemptionView), (status = 200, body = RedemptionView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn redeem(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RedeemRequest>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Redeem)?;
    let key = super::required_idempotency_key(&headers)?;
    if key.len() > 200 || key.contains('#') {
        return Err(crate::error::Invalid::new("invalid_key", "Idempotency-Key", "1 to 200 bytes without `#`").into());
    }
    answer(s.app.redeem(req.member_id, &id, key).await?)
}

/// A member's redemptions, newest first.
#[utoipa::path(get, path = "/v1/members/{id}/redemptions", tag = "rewards", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<RedemptionView>)))]
async fn member_redemptions(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<Vec<RedemptionView>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    let list = s.app.store.member_redemptions(id).await?;
    Ok(axum::Json(list.into_iter().map(|redemption| RedemptionView { redemption }).collect()))
}

/// Cancel a redemption: points back (as a new lot), stock back. Lottery draws and used items cannot be
/// cancelled. Cancelling again answers with the cancelled record.
#[utoipa::path(post, path = "/v1/members/{id}/redemptions/{redemption_id}/cancel", tag = "rewards",
    params(("id" = i64, Path), ("redemption_id" = i64, Path)),
    responses((status = 200, body = RedemptionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_redemption(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, redemption_id)): Path<(MemberId, i64)>,
) -> Result<Response, ApiError> {
    caller.require(Permission::PointsAdjust)?;
    match s.app.cancel_redemption(id, redemption_id).await? {
        Redeemed::Created(r) => Ok(axum::Json(RedemptionView { redemption: r }).into_response()),
        other => answer(other),
    }
}
