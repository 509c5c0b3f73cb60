//! The HTTP JSON API (`/v1/...`), its OpenAPI spec (routes and spec registered together with utoipa-axum),
//! the offline Swagger UI at `/docs`, health and Prometheus metrics. Handlers are thin: authenticate,
//! check the role, call `App`, render.

mod admin;
mod analytics;
mod commerce;
mod coupons;
pub mod error;
mod events;
mod loyalty;
mod members;
mod metrics;
mod reports;
mod rewards;
mod risk;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;
use crate::security::{Permission, Principal, content_digest};
use crate::store::IdempotencyBegin;
pub use error::{ApiError, ApiJson};

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    metrics: Arc<metrics::Metrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Huiyuan API", description = "Membership, loyalty and customer-behaviour system of record. \
        Authenticate with `Authorization: Bearer <key>`. Money is integer minor units (fen); times are RFC 3339, stored in UTC."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "members", description = "Members, identities, merges"),
        (name = "commerce", description = "Orders, refunds, catalog, channels and stores"),
        (name = "events", description = "Behaviour events"),
        (name = "loyalty", description = "Points and growth value, earning rules, check-ins"),
        (name = "rewards", description = "Rewards catalog and redemptions"),
        (name = "coupons", description = "Coupon templates, issuing, pricing a cart, redeeming on an order"),
        (name = "admin", description = "Keys, audit log, stats, health"),
        (name = "webhooks", description = "Webhook endpoints, their deliveries, and the outbox of events"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// The API routes and the OpenAPI document describing exactly them.
pub fn api() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(members::routes())
        .merge(commerce::routes())
        .merge(events::routes())
        .merge(loyalty::routes())
        .merge(rewards::routes())
        .merge(reports::routes())
        .merge(risk::routes())
        .merge(coupons::routes())
        .merge(admin::routes())
        .merge(webhooks::routes())
        .merge(analytics::routes())
        .split_for_parts()
}

/// The whole service: API, spec, docs, health and metrics.
pub fn router(app: Arc<App>) -> axum::Router {
    let (api, spec) = api();
    let state = AppState { app, metrics: Arc::new(metrics::Metrics::new()) };
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
        .route("/metrics", axum::routing::get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        // Event batches of 10,000 need more than axum's 2 MB default.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(state)
}

/// Serve until Ctrl-C (or SIGTERM), finishing requests in flight.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    app.spawn_loyalty_timers();
    app.spawn_delivery_worker();
    app.spawn_analytics_schedule();
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The authenticated caller.
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller's role allows `p`.
    pub fn require(&self, p: Permission) -> Result<&Principal, ApiError> {
        if self.0.role.allows(p) { Ok(&self.0) } else { Err(ApiError::forbidden()) }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("send `Authorization: Bearer <key>`"))?;
        let key =
            header.strip_prefix("Bearer ").ok_or_else(|| unauthorized("the Authorization scheme must be Bearer"))?;
        match state.app.authenticate(key.trim()).await? {
            Some(p) => Ok(Caller(p)),
            None => Err(unauthorized("unknown or revoked API key")),
        }
    }
}

/// Run a write at most once per `Idempotency-Key` (when the caller sends one): a retry with the same body
/// gets the stored response; the same key with another body is a 409.
pub async fn idempotent<T, F>(
    state: &AppState,
    who: &Principal,
    scope: &str,
    headers: &HeaderMap,
    body: &T,
    run: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim) else {
        let (status, json) = run.await?;
        return Ok((status, axum::Json(json)).into_response());
    };
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        )
        .with_field("Idempotency-Key"));
    }
    let scope = format!("{}:{scope}", who.key_id);
    let store = &state.app.store;
    match store.idempotency_begin(&scope, key, &content_digest(body), state.app.now()).await? {
        IdempotencyBegin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        IdempotencyBegin::Mismatch => {
            Err(ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request"))
        }
        IdempotencyBegin::InProgress => Err(ApiError::conflict(
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still running; retry shortly",
        )),
        IdempotencyBegin::New => match run.await {
            Ok((status, json)) => {
                let text = json.to_string();
                store.idempotency_finish(&scope, key, status.as_u16(), &text).await?;
                Ok((status, [(header::CONTENT_TYPE, "application/json")], text).into_response())
            }
            Err(e) => {
                // Client errors are answers too: replay them. Server errors free the key for a retry.
                if e.status.is_client_error() {
                    let text = serde_json::json!({"error": {"code": e.code, "message": e.message, "field": e.field}})
                        .to_string();
                    store.idempotency_finish(&scope, key, e.status.as_u16(), &text).await?;
                } else {
                    store.idempotency_abandon(&scope, key).await?;
                }
                Err(e)
            }
        },
    }
}

/// A page of items and the cursor for the next one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` (or `before`) to get the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// Clamp a requested page size.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "out_of_range", "limit must be between 1 and 1000")
                .with_field("limit"))
        }
    }
}

/// The status for a JSON answer.
fn json(status: StatusCode, value: impl Serialize) -> Result<(StatusCode, serde_json::Value), ApiError> {
    Ok((
        status,
        serde_json::to_value(value)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?,
    ))
}

/// The `Idempotency-Key` header of a write that requires one (400 if absent or empty).
pub(crate) fn required_idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()).ok_or_else(
        || {
            ApiError::new(StatusCode::BAD_REQUEST, "missing_idempotency_key", "send an Idempotency-Key header")
                .with_field("Idempotency-Key")
        },
    )
}
