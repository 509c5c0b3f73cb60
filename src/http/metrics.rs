//! Prometheus metrics: request counts by route and status, latency histograms by route, and the webhook
//! outbox: deliveries waiting and given up per endpoint, how late the oldest waiting one is, and attempts by
//! outcome. The outbox figures are read when scraped (from the store, and the worker's counts).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The registry and the metrics the middleware feeds. One per router, so tests can run many side by side.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    outbox: OutboxMetrics,
}

/// The outbox's figures, refreshed on each scrape under the lock (so two scrapes never add a delta twice).
struct OutboxMetrics {
    lock: std::sync::Mutex<()>,
    pending: Family<EndpointLabels, Gauge>,
    dead: Family<EndpointLabels, Gauge>,
    lag: Family<EndpointLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    attempts: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("huiyuan");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests by method, route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        let outbox = OutboxMetrics {
            lock: std::sync::Mutex::new(()),
            pending: Family::default(),
            dead: Family::default(),
            lag: Family::default(),
            attempts: Family::default(),
        };
        registry.register(
            "webhook_deliveries_pending",
            "Webhook deliveries not yet acknowledged, by endpoint",
            outbox.pending.clone(),
        );
        registry.register(
            "webhook_deliveries_dead",
            "Webhook deliveries given up after the last attempt (retry them through the API), by endpoint",
            outbox.dead.clone(),
        );
        registry.register(
            "webhook_delivery_lag_seconds",
            "How long the earliest due, unacknowledged delivery has been waiting, by endpoint",
            outbox.lag.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by this process, by outcome (delivered, retrying, dead)",
            outbox.attempts.clone(),
        );
        Self { registry, requests, latency, outbox }
    }
}

/// Bring the outbox figures up to date: the backlog from the store, the attempts from the worker's totals.
async fn refresh_outbox(state: &AppState) -> Result<(), crate::app::AppError> {
    let backlog = state.app.store.delivery_backlog().await?;
    let totals = state.app.delivery_totals();
    let now = state.app.now();
    let m = &state.metrics.outbox;
    let _guard = m.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Endpoints whose backlog emptied leave no stale figures behind.
    m.pending.clear();
    m.dead.clear();
    m.lag.clear();
    for b in &backlog {
        let labels = EndpointLabels { endpoint: b.endpoint_id.to_string() };
        m.pending.get_or_create(&labels).set(b.pending);
        m.dead.get_or_create(&labels).set(b.dead);
        let waited = b.oldest_due_at.map_or(0.0, |due| (now - due).num_milliseconds().max(0) as f64 / 1000.0);
        m.lag.get_or_create(&labels).set(waited);
    }
    for (outcome, total) in [("delivered", totals.delivered), ("retrying", totals.retrying), ("dead", totals.dead)] {
        let c = m.attempts.get_or_create(&OutcomeLabels { outcome });
        c.inc_by(total.saturating_sub(c.get()));
    }
    Ok(())
}

/// Middleware: count and time every request under its route template (never the raw path, which would
/// put member ids into label values).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.requests.get_or_create(&RequestLabels { method, route: route.clone(), status: response.status().as_u16() }).inc();
    m.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    if let Err(e) = refresh_outbox(&state).await {
        // The request metrics are still worth serving; the outbox figures keep their last values.
        tracing::error!(error = %e, "reading the webhook backlog for /metrics failed");
    }
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
