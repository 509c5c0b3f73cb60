//! Keys, the audit log, stats and health.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, page_limit};
use crate::members::MemberId;
use crate::security::{AuditEntry, Permission, Role};
use crate::store::{Backend, Stats};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(stats))
        .routes(routes!(create_key))
        .routes(routes!(audit_log))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub backend: Backend,
    pub version: String,
}

/// Liveness and readiness: answers 200 only if the database answers.
#[utoipa::path(get, path = "/health", tag = "admin", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn health(State(s): State<AppState>) -> Response {
    match s.app.store.setting("vault.key_check").await {
        Ok(_) => axum::Json(Health {
            status: "ok".into(),
            backend: s.app.store.backend(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database does not answer")
                .into_response()
        }
    }
}

/// Counts of members, member and guest orders, refunds and events.
#[utoipa::path(get, path = "/v1/stats", tag = "admin", responses((status = 200, body = Stats), (status = 403, body = ErrorBody)))]
async fn stats(State(s): State<AppState>, caller: Caller) -> Result<axum::Json<Stats>, ApiError> {
    caller.require(Permission::StatsRead)?;
    Ok(axum::Json(s.app.store.stats().await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub role: Role,
    /// What the key is for (`tmall-sync`, `analyst-jane`).
    pub name: String,
}

/// A new key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub key: String,
    pub key_id: String,
    pub role: Role,
}

/// Create an API key (admins only). The key is returned once and stored only as a digest.
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = KeyRequest,
    responses((status = 201, body = KeyResponse), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<KeyRequest>,
) -> Result<Response, ApiError> {
    caller.require(Permission::KeysManage)?;
    let name = crate::members::optional_text(Some(&req.name), "name", 64)?
        .ok_or_else(|| crate::error::Invalid::missing("name"))?;
    let (key, rec) = s.app.create_key(req.role, &name).await?;
    Ok((StatusCode::CREATED, axum::Json(KeyResponse { key, key_id: rec.id, role: rec.role })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
struct AuditParams {
    member_id: Option<MemberId>,
    limit: Option<i64>,
}

/// The audit log, newest first (admins only).
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditParams),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn audit_log(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> Result<axum::Json<Vec<AuditEntry>>, ApiError> {
    caller.require(Permission::AuditRead)?;
    Ok(axum::Json(s.app.store.audit_log(p.member_id, page_limit(p.limit)?).await?))
}
