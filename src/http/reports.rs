//! Programme-wide loyalty reports over HTTP: the points liability.

use axum::extract::{Query, State};
use chrono::{DateTime, Months, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState, Caller};
use crate::loyalty::liability::Liability;
use crate::security::Permission;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(liability))
}

#[derive(Debug, Deserialize, IntoParams)]
struct LiabilityParams {
    /// Flows from this instant (RFC 3339; default: twelve months before now).
    from: Option<DateTime<Utc>>,
    /// Flows before this instant (RFC 3339; default: now).
    to: Option<DateTime<Utc>>,
}

/// The points liability: outstanding points (pending and available) by expiry month and tier, debt from
/// clawbacks, their cost at the redemption rate, and points issued, redeemed, expired, reversed and
/// adjusted per month. Analyst role and up.
#[utoipa::path(get, path = "/v1/loyalty/liability", tag = "loyalty", params(LiabilityParams),
    responses((status = 200, body = Liability), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn liability(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<LiabilityParams>,
) -> Result<axum::Json<Liability>, ApiError> {
    caller.require(Permission::StatsRead)?;
    let now = s.app.now();
    let to = p.to.unwrap_or(now);
    let from = match p.from {
        Some(f) => f,
        None => to.checked_sub_months(Months::new(12)).unwrap_or(to),
    };
    if from >= to {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
            "`from` must be before `to`",
        )
        .with_field("from"));
    }
    Ok(axum::Json(s.app.liability(from, to).await?))
}
