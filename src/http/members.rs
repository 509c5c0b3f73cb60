//! `/v1/members`: create-or-update by identity, read (personal data disclosed by role), list, look up by
//! identity, link identities, merge.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, Page, idempotent, json, page_limit};
use crate::events::EventView;
use crate::members::{IdentityInput, IdentityKind, MemberId, MemberInput, MemberView};
use crate::security::Permission;
use crate::store::{LinkOutcome, MemberFilter, MergeOutcome, MergeRecord, UpsertOutcome};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_member, list_members))
        .routes(routes!(lookup_member))
        .routes(routes!(get_member))
        .routes(routes!(link_identity))
        .routes(routes!(merge_member))
        .routes(routes!(member_events))
}

/// What a create-or-update did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpsertResponse {
    pub member_id: MemberId,
    /// `created`, `updated` or `unchanged`.
    pub outcome: String,
    /// Fields that changed on update.
    pub changed: Vec<String>,
}

/// Create a member, or update the one any of the identities belongs to.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = MemberInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "Created", body = UpsertResponse),
        (status = 200, description = "Updated or unchanged", body = UpsertResponse),
        (status = 409, description = "The identities belong to different members", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    ))]
async fn upsert_member(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<MemberInput>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::MembersWrite)?;
    idempotent(&s, who, "members.upsert", &headers, &input, async {
        let outcome = s.app.upsert_members(std::slice::from_ref(&input), who).await?.pop();
        let outcome =
            outcome.ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no outcome"))??;
        let (status, member_id, label, changed) = match outcome {
            UpsertOutcome::Created(id) => (StatusCode::CREATED, id, "created", vec![]),
            UpsertOutcome::Updated(id, changed) => (StatusCode::OK, id, "updated", changed),
            UpsertOutcome::Unchanged(id) => (StatusCode::OK, id, "unchanged", vec![]),
            UpsertOutcome::Conflict(ids) => {
                let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                return Err(ApiError::conflict(
                    "identity_conflict",
                    format!("these identities belong to different members ({}); merge them first", ids.join(", ")),
                )
                .with_field("identities"));
            }
        };
        json(status, UpsertResponse { member_id, outcome: label.into(), changed })
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
struct ListParams {
    /// Return members with ids after this cursor.
    after: Option<MemberId>,
    /// Page size, 1–1000 (default 50).
    limit: Option<i64>,
    /// Registration channel code.
    channel: Option<String>,
    city: Option<String>,
    #[param(value_type = Option<String>)]
    status: Option<crate::members::MemberStatus>,
    /// Registered at or after (RFC 3339).
    registered_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Registered before (RFC 3339).
    registered_to: Option<chrono::DateTime<chrono::Utc>>,
}

/// List members in id order. Personal data is masked (or omitted for analysts); integrations may not list.
#[utoipa::path(get, path = "/v1/members", tag = "members", params(ListParams),
    responses((status = 200, body = Page<MemberView>), (status = 403, body = ErrorBody)))]
async fn list_members(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<MemberView>>, ApiError> {
    let who = caller.require(Permission::MembersList)?;
    let limit = page_limit(p.limit)?;
    let filter = MemberFilter {
        channel: p.channel,
        city: p.city,
        status: p.status,
        registered_from: p.registered_from,
        registered_to: p.registered_to,
    };
    let items = s.app.list_members(&filter, p.after, limit, who).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|m| m.id)).flatten();
    Ok(axum::Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
struct LookupParams {
    /// Identity kind (`phone`, `email`, `customer_no`, `buyer_id.tmall`…).
    #[param(value_type = String)]
    kind: IdentityKind,
    value: String,
}

/// Find the member who holds an identity.
#[utoipa::path(get, path = "/v1/members/lookup", tag = "members", params(LookupParams),
    responses((status = 200, body = MemberView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn lookup_member(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<LookupParams>,
) -> Result<axum::Json<MemberView>, ApiError> {
    let who = caller.require(Permission::MemberRead)?;
    let id = s.app.find_member(&IdentityInput { kind: p.kind, value: p.value }).await?.map_err(ApiError::from)?;
    let id = id.ok_or_else(|| ApiError::not_found("member with this identity"))?;
    let view = s.app.member_view(id, who).await?.ok_or_else(|| ApiError::not_found("member"))?;
    Ok(axum::Json(view))
}

/// One member. Admins and operators see personal data in clear (and the look is audited).
#[utoipa::path(get, path = "/v1/members/{id}", tag = "members", params(("id" = i64, Path)),
    responses((status = 200, body = MemberView), (status = 404, body = ErrorBody)))]
async fn get_member(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
) -> Result<axum::Json<MemberView>, ApiError> {
    let who = caller.require(Permission::MemberRead)?;
    let view = s.app.member_view(id, who).await?.ok_or_else(|| ApiError::not_found("member"))?;
    Ok(axum::Json(view))
}

/// What linking did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkResponse {
    /// `linked` or `already_linked`.
    pub outcome: String,
    /// Anonymous events brought over to the member.
    pub events_moved: u64,
}

/// Link an identity to a member, e.g. an anonymous visitor id when the visitor logs in (their earlier
/// events move to the member).
#[utoipa::path(post, path = "/v1/members/{id}/identities", tag = "members", params(("id" = i64, Path)), request_body = IdentityInput,
    responses((status = 200, body = LinkResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn link_identity(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<MemberId>,
    ApiJson(input): ApiJson<IdentityInput>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::MembersWrite)?;
    let body = (id, &input);
    idempotent(&s, who, "members.link", &headers, &body, async {
        match s.app.link_identity(id, &input, who).await?.map_err(ApiError::from)? {
            LinkOutcome::Linked { events_moved } => {
                json(StatusCode::OK, LinkResponse { outcome: "linked".into(), events_moved })
            }
            LinkOutcome::AlreadyLinked => {
                json(StatusCode::OK, LinkResponse { outcome: "already_linked".into(), events_moved: 0 })
            }
            LinkOutcome::OwnedBy(other) => Err(ApiError::conflict(
                "identity_conflict",
                format!("this identity belongs to member {other}; merge instead"),
            )
            .with_field("value")),
            LinkOutcome::NoSuchMember => Err(ApiError::not_found("active member")),
        }
    })
    .await
}

/// Which member to fold into this one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    pub from_member_id: MemberId,
}

/// Merge another member into this one: identities, orders, refunds and events move, and so do its points and
/// growth value (lots keep their expiry; debt moves too), coupons, paid cards and queued loyalty work; the
/// other member is marked merged; the merge is recorded with what moved.
#[utoipa::path(post, path = "/v1/members/{id}/merge", tag = "members", params(("id" = i64, Path)), request_body = MergeRequest,
    responses((status = 200, body = MergeRecord), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn merge_member(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<MemberId>,
    ApiJson(req): ApiJson<MergeRequest>,
) -> Result<Response, ApiError> {
    let who = caller.require(Permission::MembersMerge)?;
    let body = (id, &req);
    idempotent(&s, who, "members.merge", &headers, &body, async {
        match s.app.merge_members(id, req.from_member_id, who).await? {
            MergeOutcome::Merged(rec) => json(StatusCode::OK, rec),
            MergeOutcome::NotFound(m) => Err(ApiError::not_found(&format!("member {m}"))),
            MergeOutcome::NotActive(m) => {
                Err(ApiError::conflict("member_not_active", format!("member {m} was already merged")))
            }
            MergeOutcome::Same => Err(ApiError::from(crate::error::Invalid::new(
                "same_member",
                "from_member_id",
                "a member cannot be merged into itself",
            ))),
        }
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
struct EventsParams {
    /// Most recent first; 1–1000 (default 50).
    limit: Option<i64>,
}

/// A member's most recent behaviour events.
#[utoipa::path(get, path = "/v1/members/{id}/events", tag = "members", params(("id" = i64, Path), EventsParams),
    responses((status = 200, body = Page<EventView>)))]
async fn member_events(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<MemberId>,
    Query(p): Query<EventsParams>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    caller.require(Permission::MemberRead)?;
    let items = s.app.store.member_events(id, page_limit(p.limit)?).await?;
    Ok(axum::Json(Page { items, next_cursor: None }))
}
