//! Webhook endpoints and the delivery worker: every outbox event goes to every active endpoint subscribed
//! to its type, signed with the endpoint's secret, retried with backoff until the receiver answers 2xx or
//! the attempts run out. Delivery is at least once: a receiver drops repeats by `X-Huiyuan-Event-Id`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::error::Invalid;
use crate::notify::{self, WebhookInput};
use crate::security::{Principal, content_digest};
use crate::store::{Actor, AttemptResult, DeliveryState, DueDelivery, WebhookRecord, WebhookStored, WebhookWrite};

use super::{App, AppError};

/// Vault context of webhook secrets.
const SECRET_CONTEXT: &str = "webhook.secret";

/// Deliveries claimed per round.
const CLAIM_BATCH: i64 = 100;

/// Attempts in flight at once.
const PARALLEL: usize = 8;

/// What registering an endpoint came to.
#[derive(Debug)]
pub enum WebhookCreated {
    /// New, with its signing secret (shown to the caller now).
    Created(WebhookRecord, String),
    /// The same request under the same key before: that endpoint and its secret.
    Replayed(WebhookRecord, String),
    /// The key was used for a different request.
    KeyReused,
}

/// What one round of the delivery worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryReport {
    pub attempted: u64,
    pub delivered: u64,
    /// Failed, to be retried.
    pub retrying: u64,
    /// Failed for the last time.
    pub dead: u64,
}

/// Webhook attempts by outcome since the process started (the store keeps each delivery's state; these
/// are the rates a monitor alerts on).
#[derive(Debug, Default)]
pub struct DeliveryTotals {
    delivered: AtomicU64,
    retrying: AtomicU64,
    dead: AtomicU64,
}

impl DeliveryTotals {
    fn add(&self, r: &DeliveryReport) {
        self.delivered.fetch_add(r.delivered, Ordering::Relaxed);
        self.retrying.fetch_add(r.retrying, Ordering::Relaxed);
        self.dead.fetch_add(r.dead, Ordering::Relaxed);
    }
}

/// One HTTP client for every delivery: short timeouts, no redirects (a moved endpoint is re-registered).
fn client(timeout_secs: u64) -> Result<&'static reqwest::Client, AppError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let timeout = std::time::Duration::from_secs(timeout_secs.max(1));
    let built = reqwest::Client::builder()
        .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Huiyuan-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AppError::Config(format!("webhook HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| built))
}

impl App {
    /// Register a webhook endpoint, idempotent on `key`. The secret is the caller's or a generated one; it
    /// is stored sealed and returned to the caller (again on a replay of the same request).
    pub async fn create_webhook(
        &self,
        input: &WebhookInput,
        key: &str,
        who: &Principal,
    ) -> Result<Result<WebhookCreated, Invalid>, AppError> {
        let draft = match input.validate() {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let secret = draft.secret.clone().unwrap_or_else(notify::generate_secret);
        let write = WebhookWrite {
            url: draft.url.clone(),
            secret_sealed: self.vault.seal(SECRET_CONTEXT, &secret),
            event_types: draft.event_types.clone(),
            description: draft.description.clone(),
            idem_key: format!("{}:{key}", who.key_id),
            // The secret stays out of the digest: a caller retrying without its own secret gets the first one.
            request_digest: content_digest(&draft),
        };
        let stored = self.store.insert_webhook(&write, &Actor { id: who.key_id.clone(), at: self.now() }).await?;
        Ok(Ok(match stored {
            WebhookStored::Created(r) => WebhookCreated::Created(r, secret),
            WebhookStored::Replayed(r) => {
                let secret = self.vault.open(SECRET_CONTEXT, &r.secret_sealed)?;
                WebhookCreated::Replayed(r, secret)
            }
            WebhookStored::KeyReused => WebhookCreated::KeyReused,
        }))
    }

    /// Stop delivering to an endpoint; audited. `None` if there is no such endpoint.
    pub async fn deactivate_webhook(&self, id: i64, who: &Principal) -> Result<Option<WebhookRecord>, AppError> {
        Ok(self.store.deactivate_webhook(id, &Actor { id: who.key_id.clone(), at: self.now() }).await?)
    }

    /// One round of delivery as of `now`: claim what is due, POST each (in parallel, bounded), record how
    /// each attempt ended. The server's worker calls this every `webhooks.interval_secs`; tests call it
    /// with a `now` of their choosing to step through retries.
    pub async fn deliver_once(&self, now: DateTime<Utc>) -> Result<DeliveryReport, AppError> {
        let cfg = &self.config.webhooks;
        let http = client(cfg.timeout_secs)?;
        // The lease outlasts an attempt, so a delivery is claimed by one worker at a time; a crash mid-attempt
        // makes it due again when the lease ends.
        let lease = now + chrono::Duration::seconds(i64::try_from(cfg.timeout_secs).unwrap_or(60).saturating_add(60));
        let due = self.store.claim_deliveries(now, lease, CLAIM_BATCH).await?;
        let mut report = DeliveryReport::default();
        let results: Vec<(i64, i64, AttemptResult)> = futures::stream::iter(due)
            .map(|d| async move {
                let r = self.attempt(http, &d, now).await;
                (d.endpoint_id, d.event.seq, r)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (endpoint, seq, r) in results {
            report.attempted += 1;
            match r.state {
                DeliveryState::Delivered => report.delivered += 1,
                DeliveryState::Pending => report.retrying += 1,
                DeliveryState::Dead => report.dead += 1,
            }
            if r.state != DeliveryState::Delivered {
                tracing::warn!(endpoint, seq, status = ?r.status, error = ?r.error, state = ?r.state, "webhook attempt failed");
            }
            self.store.finish_delivery(endpoint, seq, &r).await?;
        }
        self.deliveries.add(&report);
        Ok(report)
    }

    /// Webhook attempts by outcome since the process started (`attempted` is their sum).
    pub fn delivery_totals(&self) -> DeliveryReport {
        let (delivered, retrying, dead) = (
            self.deliveries.delivered.load(Ordering::Relaxed),
            self.deliveries.retrying.load(Ordering::Relaxed),
            self.deliveries.dead.load(Ordering::Relaxed),
        );
        DeliveryReport { attempted: delivered + retrying + dead, delivered, retrying, dead }
    }

    /// Send one delivery and say how it ended (never an error: a failure is an outcome to record).
    async fn attempt(&self, http: &reqwest::Client, d: &DueDelivery, now: DateTime<Utc>) -> AttemptResult {
        let cfg = &self.config.webhooks;
        let e = &d.event;
        let body = notify::body(&e.id, &e.event_type, e.occurred_at, e.member_id.unwrap_or(0), &e.data);
        let sent = match self.vault.open(SECRET_CONTEXT, &d.secret_sealed) {
            Err(err) => Err((None, format!("the endpoint's secret cannot be opened: {err}"))),
            Ok(secret) => {
                let signature = notify::signature(&secret, &body);
                let res = http
                    .post(&d.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("X-Huiyuan-Event-Id", &e.id)
                    .header("X-Huiyuan-Event-Type", &e.event_type)
                    .header("X-Huiyuan-Signature", signature)
                    .header("X-Huiyuan-Timestamp", now.timestamp().to_string())
                    .header("X-Huiyuan-Attempt", d.attempts.to_string())
                    .body(body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                    Ok(r) => Err((Some(r.status().as_u16()), format!("the receiver answered {}", r.status()))),
                    Err(err) => Err((None, transport_error(&err))),
                }
            }
        };
        match sent {
            Ok(status) => AttemptResult {
                at: now,
                status: Some(i32::from(status)),
                error: None,
                state: DeliveryState::Delivered,
                retry_at: None,
            },
            Err((status, error)) => {
                let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
                let dead = attempts >= cfg.max_attempts.max(1);
                let wait = notify::backoff(attempts, chrono::Duration::seconds(cfg.max_backoff_secs.max(30)));
                AttemptResult {
                    at: now,
                    status: status.map(i32::from),
                    error: Some(error),
                    state: if dead { DeliveryState::Dead } else { DeliveryState::Pending },
                    retry_at: (!dead).then_some(now + wait),
                }
            }
        }
    }

    /// Deliver due webhooks every `webhooks.interval_secs` (started by `huiyuan serve`, beside the loyalty timers).
    pub fn spawn_delivery_worker(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_secs(app.config.webhooks.interval_secs.max(1));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Keep going while whole batches come back, so a backlog drains without waiting a tick each.
                loop {
                    match app.deliver_once(app.now()).await {
                        Ok(r) if r.attempted >= CLAIM_BATCH as u64 => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "webhook delivery round failed");
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// A transport failure in a few words (timeouts and refused connections are the common ones).
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    format!("{kind}: {e}").chars().take(500).collect()
}
