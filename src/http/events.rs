//! `/v1/events`: batches of up to 10,000 behaviour events. Valid events are stored; each rejected one is
//! reported with its index and reason. Nothing is dropped silently.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState, Caller, idempotent, json};
use crate::events::{EventInput, MAX_BATCH};
use crate::security::Permission;
use crate::store::EventOutcome;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_events))
}

/// A batch of events. Each element is checked on its own, so one bad event does not sink the batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    #[schema(value_type = Vec<EventInput>)]
    pub events: Vec<serde_json::Value>,
}

/// One rejected event.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEvent {
    pub index: usize,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
}

/// What happened to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub stored: usize,
    /// Events already stored before (retries), not stored again.
    pub duplicates: usize,
    pub rejected: Vec<RejectedEvent>,
}

/// Ingest a batch of behaviour events.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventBatch,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, body = BatchResponse),
        (status = 413, description = "More than 10,000 events", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
async fn ingest_events(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<Response, ApiError> {
    caller.require(Permission::EventsWrite)?;
    let who = &caller.0;
    if batch.events.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("at most {MAX_BATCH} events a request; got {}", batch.events.len()),
        )
        .with_field("events"));
    }
    let batch = std::sync::Arc::new(batch);
    idempotent(&s, who, "events.ingest", &headers, &*batch, async {
        // Parsing up to 10,000 events is CPU work: keep it off the async workers.
        let events = batch.clone();
        let (inputs, index_of, mut rejected) = tokio::task::spawn_blocking(move || {
            let events = &events.events;
            let mut rejected = Vec::new();
            let mut inputs = Vec::with_capacity(events.len());
            let mut index_of = Vec::with_capacity(events.len());
            for (i, v) in events.iter().enumerate() {
                match serde_path_to_error::deserialize::<_, EventInput>(v) {
                    Ok(e) => {
                        inputs.push(e);
                        index_of.push(i);
                    }
                    Err(e) => {
                        let e = super::error::path_error(e);
                        rejected.push(RejectedEvent { index: i, code: e.code, field: e.field, message: e.message });
                    }
                }
            }
            (inputs, index_of, rejected)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let outcomes = s.app.record_events(&inputs).await?;
        let (mut stored, mut duplicates) = (0, 0);
        for (slot, o) in outcomes.into_iter().enumerate() {
            match o {
                EventOutcome::Stored => stored += 1,
                EventOutcome::Duplicate => duplicates += 1,
                EventOutcome::Rejected(e) => rejected.push(RejectedEvent {
                    index: index_of[slot],
                    code: e.code.to_string(),
                    field: (!e.field.is_empty()).then_some(e.field),
                    message: e.message,
                }),
            }
        }
        rejected.sort_by_key(|r| r.index);
        json(StatusCode::OK, BatchResponse { stored, duplicates, rejected })
    })
    .await
}
