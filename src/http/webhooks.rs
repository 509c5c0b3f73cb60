//! Webhook endpoints (`/v1/webhooks`), their deliveries, and the outbox for polling consumers
//! (`/v1/outbox`). Admins only; registering and deactivating are audited.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, Page, page_limit};
use crate::app::WebhookCreated;
use crate::notify::WebhookInput;
use crate::security::Permission;
use crate::store::{DeliveryRecord, DeliveryState, OutboxEvent, WebhookRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, deactivate_webhook))
        .routes(routes!(webhook_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(outbox))
}

/// A webhook endpoint as the API shows it. The secret appears only in the answer to its creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    /// Subscribed event types, or `["*"]`.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The key that registered it.
    pub created_by: String,
    pub deactivated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The signing secret: `X-Huiyuan-Signature` is `sha256=` + hex HMAC-SHA-256 of the body with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    fn of(r: WebhookRecord, secret: Option<String>) -> Self {
        Self {
            id: r.id,
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            active: r.active,
            created_at: r.created_at,
            created_by: r.created_by,
            deactivated_at: r.deactivated_at,
            secret,
        }
    }
}

/// Register a webhook endpoint. Requires an `Idempotency-Key`; a retry of the same request answers 200 with
/// the same endpoint and secret. Every event of a subscribed type committed from now on is POSTed to
/// it as `{"id","type","occurred_at","member_id","data"}` with headers `X-Huiyuan-Event-Id`,
/// `X-Huiyuan-Event-Type`, `X-Huiyuan-Timestamp` (Unix seconds of the attempt) and `X-Huiyuan-Signature`;
/// anything but 2xx is retried with backoff.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    params(("Idempotency-Key" = String, Header, description = "Required: makes retries safe")),
    request_body = WebhookInput,
    responses((status = 201, body = WebhookView), (status = 200, body = WebhookView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<WebhookInput>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::WebhooksManage)?;
    let key = super::required_idempotency_key(&headers)?;
    if key.len() > 200 {
        return Err(crate::error::Invalid::new("invalid_key", "Idempotency-Key", "1 to 200 bytes").into());
    }
    match s.app.create_webhook(&req, key, who).await?? {
        WebhookCreated::Created(r, secret) => {
            Ok((StatusCode::CREATED, axum::Json(WebhookView::of(r, Some(secret)))).into_response())
        }
        WebhookCreated::Replayed(r, secret) => {
            Ok((StatusCode::OK, axum::Json(WebhookView::of(r, Some(secret)))).into_response())
        }
        WebhookCreated::KeyReused => {
            Err(ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request"))
        }
    }
}

/// Every registered endpoint, active or not (without secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>), (status = 403, body = ErrorBody)))]
async fn list_webhooks(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<WebhookView>>, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    Ok(axum::Json(s.app.store.webhooks().await?.into_iter().map(|r| WebhookView::of(r, None)).collect()))
}

/// One endpoint (without its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<WebhookView>, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let r = s.app.store.webhook(id).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(axum::Json(WebhookView::of(r, None)))
}

/// Deactivate an endpoint: nothing more is sent to it (deliveries still pending stay unsent). Idempotent.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn deactivate_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<WebhookView>, ApiError> {
    let who = caller.require(Permission::WebhooksManage)?;
    let r = s.app.deactivate_webhook(id, who).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(axum::Json(WebhookView::of(r, None)))
}

#[derive(Debug, Deserialize, IntoParams)]
struct DeliveryParams {
    /// Deliveries of events after this outbox `seq`.
    after: Option<i64>,
    /// Only deliveries in this state.
    state: Option<DeliveryState>,
    /// Page size, 1–1000 (default 50).
    limit: Option<i64>,
}

/// An endpoint's deliveries, oldest event first: attempts, the next attempt, the last status or error;
/// `dead` ones were given up.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = i64, Path), DeliveryParams),
    responses((status = 200, body = Page<DeliveryRecord>), (status = 404, body = ErrorBody)))]
async fn webhook_deliveries(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(p): Query<DeliveryParams>,
) -> Result<axum::Json<Page<DeliveryRecord>>, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let limit = page_limit(p.limit)?;
    if s.app.store.webhook(id).await?.is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    let items = s.app.store.webhook_deliveries(id, p.after.unwrap_or(0), p.state, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|d| d.seq)).flatten();
    Ok(axum::Json(Page { items, next_cursor }))
}

/// Send a `dead` delivery again: it becomes pending, due now, with a fresh count of attempts. Audited.
/// Retrying one that is still pending changes nothing; a delivered one is a 409.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{seq}/retry", tag = "webhooks",
    params(("id" = i64, Path), ("seq" = i64, Path, description = "The event's outbox `seq`")),
    responses((status = 200, body = DeliveryRecord), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_delivery(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, seq)): Path<(i64, i64)>,
) -> Result<axum::Json<DeliveryRecord>, ApiError> {
    let who = caller.require(Permission::WebhooksManage)?;
    let find = || async {
        let found = s.app.store.webhook_deliveries(id, seq.saturating_sub(1), None, 1).await?;
        Ok::<_, ApiError>(found.into_iter().find(|d| d.seq == seq))
    };
    let before = find().await?.ok_or_else(|| ApiError::not_found("delivery"))?;
    if before.state == DeliveryState::Delivered {
        return Err(ApiError::conflict("already_delivered", "this delivery was acknowledged"));
    }
    s.app.store.retry_delivery(id, seq, &crate::store::Actor { id: who.key_id.clone(), at: s.app.now() }).await?;
    Ok(axum::Json(find().await?.ok_or_else(|| ApiError::not_found("delivery"))?))
}

#[derive(Debug, Deserialize, IntoParams)]
struct OutboxParams {
    /// Events after this `seq` (0 or absent: from the start).
    after: Option<i64>,
    /// Only events of this type (`reward.redeemed`, …).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Page size, 1–1000 (default 50).
    limit: Option<i64>,
}

/// The outbox in commit order, for consumers that poll instead of receiving webhooks: pass the last
/// `seq` seen as `after`. An event committed later always has a larger `seq`, so nothing is skipped.
/// `next_cursor` is set when the page is full.
#[utoipa::path(get, path = "/v1/outbox", tag = "webhooks", params(OutboxParams),
    responses((status = 200, body = Page<OutboxEvent>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn outbox(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<OutboxParams>,
) -> Result<axum::Json<Page<OutboxEvent>>, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let limit = page_limit(p.limit)?;
    if let Some(t) = p.event_type.as_deref().filter(|t| crate::notify::EventType::parse(t).is_none()) {
        return Err(
            crate::error::Invalid::new("unknown_event_type", "type", format!("unknown event type `{t}`")).into()
        );
    }
    let items = s.app.store.outbox_events(p.after.unwrap_or(0), p.event_type.as_deref(), limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|e| e.seq)).flatten();
    Ok(axum::Json(Page { items, next_cursor }))
}
