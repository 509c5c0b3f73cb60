//! Orders (idempotent on `(channel, order_no)`), refunds (idempotent on `(channel, refund_no)`), the
//! catalog, channels and stores.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, Page, idempotent, json, page_limit};
use crate::commerce::{Channel, OrderInput, OrderView, RefundInput, RefundView, Sku, StoreLocation};
use crate::members::MemberId;
use crate::security::Permission;
use crate::store::{Actor, WriteOutcome};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(get_order))
        .routes(routes!(member_orders))
        .routes(routes!(create_refund))
        .routes(routes!(get_refund))
        .routes(routes!(upsert_skus, list_skus))
        .routes(routes!(get_sku))
        .routes(routes!(upsert_channel, list_channels))
        .routes(routes!(upsert_store, list_stores))
}

/// Record an order. Sending the same order again (same channel, order_no and content) returns the stored
/// order with 200; the same key with different content is a 409.
#[utoipa::path(post, path = "/v1/orders", tag = "commerce", request_body = OrderInput,
    responses(
        (status = 201, description = "Created", body = OrderView),
        (status = 200, description = "Already recorded with the same content", body = OrderView),
        (status = 409, description = "Same (channel, order_no), different content", body = ErrorBody),
        (status = 422, description = "Invalid; nothing stored", body = ErrorBody),
    ))]
async fn create_order(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<OrderInput>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::OrdersWrite)?;
    let (outcome, created) = s.app.record_order(&input, who).await?;
    if let (WriteOutcome::Created(_), Some(order)) = (&outcome, created) {
        return Ok((StatusCode::CREATED, axum::Json(order)).into_response());
    }
    let (status, id) = match outcome {
        WriteOutcome::Created(id) => (StatusCode::CREATED, id),
        WriteOutcome::Duplicate(id) => (StatusCode::OK, id),
        WriteOutcome::Conflict(id) => {
            return Err(ApiError::conflict(
                "order_conflict",
                format!(
                    "order {} in channel {} was recorded (id {id}) with different content",
                    input.order_no, input.channel
                ),
            )
            .with_field("order_no"));
        }
        WriteOutcome::Rejected(e) => return Err(e.into()),
    };
    let order = s.app.store.order(id).await?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok((status, axum::Json(order)).into_response())
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "commerce", params(("id" = i64, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
async fn get_order(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<OrderView>, ApiError> {
    caller.require(Permission::OrdersRead)?;
    Ok(axum::Json(s.app.store.order(id).await?.ok_or_else(|| ApiError::not_found("order"))?))
}

#[derive(Debug, Deserialize, IntoParams)]
struct OrdersParams {
    /// Orders with ids below this cursor (newest first).
    before: Option<i64>,
    /// 1–1000 (default 50).
    limit: Option<i64>,
}

/// A member's orders, newest first.
#[utoipa::path(get, path = "/v1/members/{id}/orders", tag = "commerce", params(("id" = i64, Path), OrdersParams),
    responses((status = 200, body = Page<OrderView>)))]
async fn member_orders(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
    Query(p): Query<OrdersParams>,
) -> Result<axum::Json<Page<OrderView>>, ApiError> {
    caller.require(Permission::OrdersRead)?;
    let limit = page_limit(p.limit)?;
    let items = s.app.store.member_orders(id, p.before, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|o| o.id)).flatten();
    Ok(axum::Json(Page { items, next_cursor }))
}

/// Record a refund of some or all lines of an order. Refunding more than was bought is refused.
#[utoipa::path(post, path = "/v1/refunds", tag = "commerce", request_body = RefundInput,
    responses(
        (status = 201, body = RefundView),
        (status = 200, description = "Already recorded with the same content", body = RefundView),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
async fn create_refund(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RefundInput>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::OrdersWrite)?;
    idempotent(&s, who, "refunds.create", &headers, &input, async {
        let (status, id) = match s.app.record_refund(&input, who).await? {
            WriteOutcome::Created(id) => (StatusCode::CREATED, id),
            WriteOutcome::Duplicate(id) => (StatusCode::OK, id),
            WriteOutcome::Conflict(id) => {
                return Err(ApiError::conflict(
                    "refund_conflict",
                    format!("refund {} was recorded (id {id}) with different content", input.refund_no),
                )
                .with_field("refund_no"));
            }
            WriteOutcome::Rejected(e) => return Err(e.into()),
        };
        json(status, s.app.store.refund(id).await?.ok_or_else(|| ApiError::not_found("refund"))?)
    })
    .await
}

#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "commerce", params(("id" = i64, Path)),
    responses((status = 200, body = RefundView), (status = 404, body = ErrorBody)))]
async fn get_refund(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<RefundView>, ApiError> {
    caller.require(Permission::OrdersRead)?;
    Ok(axum::Json(s.app.store.refund(id).await?.ok_or_else(|| ApiError::not_found("refund"))?))
}

/// A batch of catalog entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuBatch {
    pub skus: Vec<Sku>,
}

/// How many catalog entries were written.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkuWriteResponse {
    pub written: u64,
}

/// Insert or replace catalog entries (up to 10,000 a request). Any invalid entry rejects the batch.
#[utoipa::path(post, path = "/v1/skus", tag = "commerce", request_body = SkuBatch,
    responses((status = 200, body = SkuWriteResponse), (status = 422, body = ErrorBody)))]
async fn upsert_skus(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(batch): ApiJson<SkuBatch>,
) -> Result<axum::Json<SkuWriteResponse>, ApiError> {
    caller.require(Permission::CatalogWrite)?;
    if batch.skus.len() > 10_000 {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", "at most 10000 skus a request")
            .with_field("skus"));
    }
    for (i, sku) in batch.skus.iter().enumerate() {
        sku.validate().map_err(|e| ApiError::from(e.within(&format!("skus[{i}]"))))?;
    }
    let written = s.app.store.upsert_skus(&batch.skus, false).await?;
    Ok(axum::Json(SkuWriteResponse { written }))
}

#[derive(Debug, Deserialize, IntoParams)]
struct SkuParams {
    /// SKUs after this code.
    after: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/skus", tag = "commerce", params(SkuParams), responses((status = 200, body = Vec<Sku>)))]
async fn list_skus(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<SkuParams>,
) -> Result<axum::Json<Vec<Sku>>, ApiError> {
    caller.require(Permission::CatalogRead)?;
    Ok(axum::Json(s.app.store.skus(p.after.as_deref(), page_limit(p.limit)?).await?))
}

#[utoipa::path(get, path = "/v1/skus/{sku}", tag = "commerce", params(("sku" = String, Path)),
    responses((status = 200, body = Sku), (status = 404, body = ErrorBody)))]
async fn get_sku(
    State(s): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<axum::Json<Sku>, ApiError> {
    caller.require(Permission::CatalogRead)?;
    Ok(axum::Json(s.app.store.sku(&sku).await?.ok_or_else(|| ApiError::not_found("sku"))?))
}

/// Add or rename a sales channel.
#[utoipa::path(post, path = "/v1/channels", tag = "commerce", request_body = Channel,
    responses((status = 200, body = Channel), (status = 422, body = ErrorBody)))]
async fn upsert_channel(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(c): ApiJson<Channel>,
) -> Result<axum::Json<Channel>, ApiError> {
    let who = caller.require(Permission::ChannelsWrite)?;
    c.validate()?;
    s.app.store.upsert_channel(&c, &Actor { id: who.key_id.clone(), at: s.app.now() }).await?;
    s.app.channels_changed().await;
    Ok(axum::Json(c))
}

#[utoipa::path(get, path = "/v1/channels", tag = "commerce", responses((status = 200, body = Vec<Channel>)))]
async fn list_channels(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<Channel>>, ApiError> {
    caller.require(Permission::CatalogRead)?;
    Ok(axum::Json(s.app.store.channels().await?))
}

/// Add or change a physical store.
#[utoipa::path(post, path = "/v1/stores", tag = "commerce", request_body = StoreLocation,
    responses((status = 200, body = StoreLocation), (status = 422, body = ErrorBody)))]
async fn upsert_store(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(st): ApiJson<StoreLocation>,
) -> Result<axum::Json<StoreLocation>, ApiError> {
    let who = caller.require(Permission::ChannelsWrite)?;
    st.validate()?;
    if !s.app.store.channels().await?.iter().any(|c| c.code == st.channel) {
        return Err(ApiError::from(crate::error::Invalid::new(
            "unknown_channel",
            "channel",
            format!("unknown channel `{}`", st.channel),
        )));
    }
    s.app.store.upsert_store(&st, &Actor { id: who.key_id.clone(), at: s.app.now() }).await?;
    s.app.channels_changed().await;
    Ok(axum::Json(st))
}

#[utoipa::path(get, path = "/v1/stores", tag = "commerce", responses((status = 200, body = Vec<StoreLocation>)))]
async fn list_stores(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<StoreLocation>>, ApiError> {
    caller.require(Permission::CatalogRead)?;
    Ok(axum::Json(s.app.store.stores().await?))
}
