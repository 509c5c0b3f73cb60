//! Coupons over HTTP: templates (`/v1/coupon-templates`), issuing with an `Idempotency-Key`, a member's
//! coupons, pricing a cart (`POST /v1/coupons/validate`, writes nothing), redeeming on an order and voiding.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, required_idempotency_key};
use crate::app::{CouponFault, PriceRequest};
use crate::error::Invalid;
use crate::loyalty::coupons::{Coupon, CouponTemplate, Quote, display_code};
use crate::members::MemberId;
use crate::security::Permission;
use crate::store::{CouponRefusal, CouponTemplateRecord, IssueRefusal};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(get_template, put_template))
        .routes(routes!(issue))
        .routes(routes!(member_coupons))
        .routes(routes!(validate))
        .routes(routes!(redeem))
        .routes(routes!(void))
}

/// A template as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    /// The definition (the same document `PUT /v1/coupon-templates/{id}` takes).
    #[schema(value_type = Object)]
    pub template: CouponTemplate,
    /// Coupons issued so far (limited by `total_quantity`).
    pub issued: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<CouponTemplateRecord> for TemplateView {
    fn from(r: CouponTemplateRecord) -> Self {
        Self { template: r.template, issued: r.issued, created_at: r.created_at, updated_at: r.updated_at }
    }
}

/// A coupon, with its code also in groups of four for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct CouponView {
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub coupon: Coupon,
    /// `7KQ2-MXWD-93TG`.
    pub display_code: String,
}

impl From<Coupon> for CouponView {
    fn from(coupon: Coupon) -> Self {
        let display_code = display_code(&coupon.code);
        Self { coupon, display_code }
    }
}

fn fault(f: CouponFault) -> ApiError {
    match f {
        CouponFault::Invalid(e) => e.into(),
        CouponFault::InvalidCode { field, error } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_code", error.to_string()).with_field(field)
        }
        CouponFault::NotFound(code) => {
            ApiError::new(StatusCode::NOT_FOUND, "coupon_not_found", format!("no coupon has the code {code}"))
        }
        CouponFault::NoSuchTemplate => {
            ApiError::new(StatusCode::NOT_FOUND, "coupon_template_not_found", "coupon template not found")
        }
        CouponFault::NoSuchMember => ApiError::not_found("member"),
        CouponFault::NoSuchOrder => {
            ApiError::new(StatusCode::NOT_FOUND, "order_not_found", "order not found").with_field("order_id")
        }
        CouponFault::NotYourOrder => {
            ApiError::conflict("not_your_order", "the order is not the coupon holder's").with_field("order_id")
        }
        CouponFault::NotApplicable { code, message } => ApiError::conflict(code, message),
        CouponFault::Refused(r) => {
            let code = match &r {
                CouponRefusal::Invalid(e) => return e.clone().into(),
                CouponRefusal::AlreadyRedeemed { .. } => "coupon_already_redeemed",
                CouponRefusal::NotYetValid { .. } => "coupon_not_yet_valid",
                CouponRefusal::Expired { .. } => "coupon_expired",
                CouponRefusal::Voided => "coupon_voided",
            };
            ApiError::conflict(code, r.to_string())
        }
        CouponFault::KeyReused => {
            ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")
        }
    }
}

/// Every coupon template.
#[utoipa::path(get, path = "/v1/coupon-templates", tag = "coupons", responses((status = 200, body = Vec<TemplateView>)))]
async fn list_templates(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<TemplateView>>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    Ok(axum::Json(s.app.store.coupon_templates().await?.into_iter().map(Into::into).collect()))
}

/// One coupon template.
#[utoipa::path(get, path = "/v1/coupon-templates/{id}", tag = "coupons", params(("id" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody)))]
async fn get_template(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TemplateView>, ApiError> {
    caller.require(Permission::LoyaltyRead)?;
    let t = s.app.store.coupon_template(&id).await?.ok_or_else(|| fault(CouponFault::NoSuchTemplate))?;
    Ok(axum::Json(t.into()))
}

/// Create or replace a coupon template. Invalid templates are 422 with the field named
/// (`benefit.off_bp`, `validity.days`). Coupons already issued keep their own window.
#[utoipa::path(put, path = "/v1/coupon-templates/{id}", tag = "coupons", params(("id" = String, Path)),
    request_body(content = Object, description = "A template: id, name, description, benefit, scope, validity, per_member_limit, total_quantity, stackable, time_zone"),
    responses((status = 200, body = TemplateView), (status = 422, body = ErrorBody)))]
async fn put_template(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<axum::Json<TemplateView>, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let template: CouponTemplate = serde_path_to_error::deserialize(body)
        .map_err(|e| ApiError::from(Invalid::new("invalid_template", e.path().to_string(), e.inner().to_string())))?;
    if template.id != id {
        return Err(Invalid::new("id_mismatch", "id", "the template's `id` must match the path").into());
    }
    Ok(axum::Json(s.app.put_coupon_template(&template, who).await??.into()))
}

/// Whom to issue to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// One member or many; a member named twice receives two coupons (within the per-member limit).
    pub member_ids: Vec<MemberId>,
}

/// What an issue request did: the coupons issued and, per refused member, why.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssueResponse {
    pub template_id: String,
    pub issued: Vec<CouponView>,
    pub refused: Vec<IssueRefusal>,
}

/// Issue coupons of a template to members, idempotent on the `Idempotency-Key`: a retry answers with the
/// original coupons. A key is scoped to its template, as the path is: the same key on another template is
/// another request. Members at their limit (`limit_reached`), beyond the total quantity (`sold_out`),
/// unknown (`no_such_member`) or after a fixed window closed (`window_closed`) are refused one by one.
#[utoipa::path(post, path = "/v1/coupon-templates/{id}/issue", tag = "coupons", params(("id" = String, Path)),
    request_body = IssueRequest,
    responses((status = 201, body = IssueResponse), (status = 200, body = IssueResponse, description = "A retry: the original result"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn issue(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<IssueRequest>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    let key = required_idempotency_key(&headers)?;
    let issued = s.app.issue_coupons(&id, &req.member_ids, key, who).await?.map_err(fault)?;
    let status = if issued.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let body = IssueResponse {
        template_id: id,
        issued: issued.result.coupons.into_iter().map(Into::into).collect(),
        refused: issued.result.refused,
    };
    Ok((status, axum::Json(body)).into_response())
}

/// A member's coupons, newest first, in every state.
#[utoipa::path(get, path = "/v1/members/{id}/coupons", tag = "coupons", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<CouponView>)))]
async fn member_coupons(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<Vec<CouponView>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    Ok(axum::Json(s.app.member_coupons(id).await?.into_iter().map(Into::into).collect()))
}

/// A cart and the coupons to try on it.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ValidateRequest {
    pub member_id: MemberId,
    pub channel: String,
    /// Lines: `line_no`, `sku`, `category_path`, `quantity`, `unit_price`, `amount` (fen, before coupons).
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<serde_json::Value>,
    pub shipping_fee: Option<i64>,
    /// Coupon codes in the order the member picked them.
    pub coupons: Vec<String>,
}

/// Price a cart with coupons. Writes nothing. Answers the quote: per coupon, applied (with its discount
/// and where it sits, line by line) or the reason it does not apply; the per-line discount and payable; the
/// payable total. An unknown code is 404 `coupon_not_found`, a mistyped one 422 `invalid_code`.
#[utoipa::path(post, path = "/v1/coupons/validate", tag = "coupons", request_body = ValidateRequest,
    responses((status = 200, body = Object, description = "The quote"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn validate(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PriceRequest>,
) -> Result<axum::Json<Quote>, ApiError> {
    caller.require(Permission::Redeem)?;
    Ok(axum::Json(s.app.price_cart(&req).await?.map_err(fault)?))
}

/// The order a coupon is used on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemCouponRequest {
    pub order_id: i64,
}

/// Record a coupon's use on an order (the holder's, and the coupon must apply to it). Idempotent: the same
/// order again answers with the same record; another order is 409 `coupon_already_redeemed`.
#[utoipa::path(post, path = "/v1/coupons/{code}/redeem", tag = "coupons", params(("code" = String, Path)),
    request_body = RedeemCouponRequest,
    responses((status = 200, body = CouponView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn redeem(
    State(s): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiJson(req): ApiJson<RedeemCouponRequest>,
) -> Result<axum::Json<CouponView>, ApiError> {
    let who = caller.require(Permission::Redeem)?;
    Ok(axum::Json(s.app.redeem_coupon(&code, req.order_id, who).await?.map_err(fault)?.into()))
}

/// Void an unused coupon (an operator's correction); voiding again changes nothing, a used coupon is 409.
#[utoipa::path(post, path = "/v1/coupons/{code}/void", tag = "coupons", params(("code" = String, Path)),
    responses((status = 200, body = CouponView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn void(
    State(s): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<axum::Json<CouponView>, ApiError> {
    let who = caller.require(Permission::LoyaltyConfigure)?;
    Ok(axum::Json(s.app.void_coupon(&code, who).await?.map_err(fault)?.into()))
}
