//! Loyalty over HTTP: a member's points, history (with the reasons behind each entry), operator adjustments
//! (idempotent by `Idempotency-Key`) and check-ins; the earning rules by version; and the simulator.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller};
use crate::app::{
    CardBought, CheckInOutcome, HistoryEntry, PointsRefused, PointsView, RulesRefused, SimulatedMember, TierView,
};
use crate::loyalty::ledger::{LedgerError, Wallet};
use crate::loyalty::rules::{RuleInput, RuleSet, RuleSetError};
use crate::loyalty::tiers::TierProgram;
use crate::members::{MemberId, optional_text};
use crate::security::Permission;
use crate::store::RuleSetRecord;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_points))
        .routes(routes!(adjust_points))
        .routes(routes!(points_history))
        .routes(routes!(check_in))
        .routes(routes!(get_rules, put_rules))
        .routes(routes!(rule_versions))
        .routes(routes!(rule_version))
        .routes(routes!(simulate))
        .routes(routes!(member_tier))
        .routes(routes!(buy_card, member_cards))
        .routes(routes!(get_tiers, put_tiers))
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
    let key = super::required_idempotency_key(&headers)?;
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

/// The rules in force or a stored version, with who stored it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleSetResponse {
    pub version: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    /// The rule set itself (the same document `PUT /v1/loyalty/rules` takes).
    #[schema(value_type = Object)]
    pub rules: RuleSet,
}

/// The earning rules in force (the newest version).
#[utoipa::path(get, path = "/v1/loyalty/rules", tag = "loyalty",
    responses((status = 200, body = RuleSetResponse), (status = 404, body = ErrorBody)))]
async fn get_rules(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<RuleSetResponse>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    let (rec, rules) = s.app.rules_in_force().await?.ok_or_else(|| ApiError::not_found("rule set"))?;
    Ok(axum::Json(RuleSetResponse { version: rec.version, created_at: rec.created_at, actor: rec.actor, rules }))
}

/// Store a new version of the earning rules. Its `version` must be exactly one more than the version in
/// force, so two editors never silently overwrite each other; the new version applies from now on.
#[utoipa::path(put, path = "/v1/loyalty/rules", tag = "loyalty",
    request_body(content = Object, description = "A rule set (see GET /v1/loyalty/rules)"),
    responses((status = 201, body = RuleSetRecord), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_rules(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let set: RuleSet = serde_path_to_error::deserialize(body).map_err(|e| {
        let field = e.path().to_string();
        ApiError::from(crate::error::Invalid::new("invalid_rules", field, e.inner().to_string()))
    })?;
    match s.app.put_rules(&set, who).await? {
        Ok(rec) => Ok((StatusCode::CREATED, axum::Json(rec)).into_response()),
        Err(RulesRefused::Invalid(RuleSetError::Invalid(e))) => Err(e.into()),
        Err(RulesRefused::Invalid(e)) => Err(crate::error::Invalid::new("invalid_rules", "", e.to_string()).into()),
        Err(RulesRefused::VersionConflict { current }) => Err(ApiError::conflict(
            "version_conflict",
            format!("version {current} is in force; a new rule set must be version {}", current + 1),
        )),
    }
}

/// Every stored version of the rules, newest first.
#[utoipa::path(get, path = "/v1/loyalty/rules/versions", tag = "loyalty",
    responses((status = 200, body = Vec<RuleSetRecord>)))]
async fn rule_versions(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<RuleSetRecord>>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.store.rule_sets().await?))
}

/// One stored version of the rules.
#[utoipa::path(get, path = "/v1/loyalty/rules/versions/{version}", tag = "loyalty", params(("version" = i64, Path)),
    responses((status = 200, body = RuleSetResponse), (status = 404, body = ErrorBody)))]
async fn rule_version(
    State(s): State<AppState>,
    caller: Caller,
    Path(version): Path<i64>,
) -> Result<axum::Json<RuleSetResponse>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    let (rec, rules) = s.app.rules_version(version).await?.ok_or_else(|| ApiError::not_found("rule set version"))?;
    Ok(axum::Json(RuleSetResponse { version: rec.version, created_at: rec.created_at, actor: rec.actor, rules }))
}

/// A dry run of the earning rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// Evaluate as this member (their tier, birthday, and what they already earned today and this month).
    pub member_id: Option<MemberId>,
    /// Facts to use instead of (or without) a stored member.
    #[serde(default)]
    pub member: SimulatedMember,
    /// `{"type": "order", "channel", "placed_at", "paid", "lines": [{"line_no", "sku", "kind", "amount",
    /// "category_path"?, "brand"?}], "shipping_fee"}` or `{"type": "event", "at", "behaviour": {"kind": "check_in",
    /// "streak_day": 3}}`. Lines without a category or brand take the catalog's.
    #[schema(value_type = Object)]
    pub input: RuleInput,
    /// A draft rule set to try instead of the rules in force.
    #[schema(value_type = Object)]
    pub rules: Option<RuleSet>,
}

/// The effects an input would have, and for every rule why it applied or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimulateResponse {
    pub rule_version: u32,
    pub points: i64,
    pub growth: i64,
    /// Points and growth per line (or event), with the rule and multipliers behind them.
    #[schema(value_type = Vec<Object>)]
    pub effects: Vec<crate::loyalty::rules::Effect>,
    /// One per rule and target: applied or not, and why ("member day is Wednesday", "daily cap reached").
    #[schema(value_type = Vec<Object>)]
    pub explanations: Vec<crate::loyalty::rules::Explanation>,
}

/// Simulate earning: evaluates an order or behaviour under the rules in force (or a draft), writing nothing.
#[utoipa::path(post, path = "/v1/loyalty/simulate", tag = "loyalty", request_body = SimulateRequest,
    responses((status = 200, body = SimulateResponse), (status = 422, body = ErrorBody)))]
async fn simulate(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SimulateRequest>,
) -> Result<axum::Json<SimulateResponse>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    let ev = s.app.simulate(req.member_id, req.member, req.input, req.rules).await??;
    Ok(axum::Json(SimulateResponse {
        rule_version: ev.rule_version,
        points: ev.member_points(),
        growth: ev.member_growth(),
        effects: ev.effects,
        explanations: ev.explanations,
    }))
}

/// How many history entries to return.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HistoryParams {
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A member's points and growth-value history, newest first; each entry says why it exists.
#[utoipa::path(get, path = "/v1/members/{id}/points/history", tag = "loyalty",
    params(("id" = i64, Path), HistoryParams),
    responses((status = 200, body = Vec<HistoryEntry>), (status = 404, body = ErrorBody)))]
async fn points_history(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
    axum::extract::Query(p): axum::extract::Query<HistoryParams>,
) -> Result<axum::Json<Vec<HistoryEntry>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    Ok(axum::Json(s.app.points_history(id, limit).await?.ok_or_else(|| ApiError::not_found("member"))?))
}

/// A check-in.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    /// Channel code (default `web`).
    pub channel: Option<String>,
}

/// 签到: check the member in for today (local to the business time zone). Once per day whatever the channel;
/// a repeat answers 200 with what today's check-in earned.
#[utoipa::path(post, path = "/v1/members/{id}/check-ins", tag = "loyalty", params(("id" = i64, Path)),
    request_body = CheckInRequest,
    responses((status = 201, body = CheckInOutcome), (status = 200, body = CheckInOutcome), (status = 422, body = ErrorBody)))]
async fn check_in(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Permission::MembersWrite)?;
    // The body is optional: an empty one checks in on the default channel.
    let req: CheckInRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckInRequest::default()
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            ApiError::from(crate::error::Invalid::new("invalid_body", e.path().to_string(), e.inner().to_string()))
        })?
    };
    let out = s.app.check_in(id, req.channel).await??;
    let status = if out.first_today { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(out)).into_response())
}

/// A member's tier: code and name, progress (window growth, keep level, next tier), benefits and history.
#[utoipa::path(get, path = "/v1/members/{id}/tier", tag = "loyalty", params(("id" = i64, Path)),
    responses((status = 200, body = TierView), (status = 404, body = ErrorBody)))]
async fn member_tier(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<TierView>, ApiError> {
    caller.require(Permission::MemberRead)?;
    Ok(axum::Json(s.app.tier_view(id).await?.ok_or_else(|| ApiError::not_found("member with a tier"))?))
}

/// The tier program: tiers by growth over a rolling window, keep levels, grace, review schedule, paid cards.
#[utoipa::path(get, path = "/v1/loyalty/tiers", tag = "loyalty",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn get_tiers(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<TierProgram>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.tier_program().await?.ok_or_else(|| ApiError::not_found("tier program"))?))
}

/// Replace the tier program (validated; the error names the field). Members move on their next update.
#[utoipa::path(put, path = "/v1/loyalty/tiers", tag = "loyalty",
    request_body(content = Object, description = "A tier program (see GET /v1/loyalty/tiers)"),
    responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
async fn put_tiers(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<axum::Json<TierProgram>, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let program: TierProgram = serde_path_to_error::deserialize(body).map_err(|e| {
        ApiError::from(crate::error::Invalid::new("invalid_tiers", e.path().to_string(), e.inner().to_string()))
    })?;
    s.app.put_tier_program(&program, who).await??;
    Ok(axum::Json(program))
}

/// A paid card bought at the shop's checkout.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyCard {
    /// A card plan of the tier program (`cards[].code`).
    pub plan: String,
    /// The shop's payment reference, kept with the card.
    #[serde(default)]
    pub payment_ref: Option<String>,
}

/// Record a paid membership card (付费会员) the member bought: 201 with the new term (a renewal starts where
/// the current term of the plan ends), 200 with the same card on a retry with the same `Idempotency-Key`
/// (required), 409 if the key was used for another purchase. Audited. Admin, operator and integration.
#[utoipa::path(post, path = "/v1/members/{id}/cards", tag = "loyalty", params(("id" = i64, Path),
        ("Idempotency-Key" = String, Header)), request_body = BuyCard,
    responses((status = 201, body = crate::store::CardRecord), (status = 200, body = crate::store::CardRecord),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn buy_card(
    State(s): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<MemberId>,
    ApiJson(req): ApiJson<BuyCard>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::MembersWrite)?;
    let key = super::required_idempotency_key(&headers)?;
    if key.len() > 200 {
        return Err(crate::error::Invalid::new("invalid_key", "Idempotency-Key", "1 to 200 bytes").into());
    }
    let payment_ref = optional_text(req.payment_ref.as_deref(), "payment_ref", 200)?;
    match s.app.buy_card(id, req.plan.trim(), key, payment_ref, who).await? {
        CardBought::Bought(c) => Ok((StatusCode::CREATED, axum::Json(c)).into_response()),
        CardBought::Replayed(c) => Ok((StatusCode::OK, axum::Json(c)).into_response()),
        CardBought::KeyReused => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different card purchase",
        )),
        CardBought::UnknownMember => Err(ApiError::not_found("member")),
        CardBought::Invalid(e) => Err(e.into()),
    }
}

/// A member's paid card terms, oldest first (active or not).
#[utoipa::path(get, path = "/v1/members/{id}/cards", tag = "loyalty", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<crate::store::CardRecord>)))]
async fn member_cards(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<Vec<crate::store::CardRecord>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    Ok(axum::Json(s.app.store.member_cards(id).await?))
}
