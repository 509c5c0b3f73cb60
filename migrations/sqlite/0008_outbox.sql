-- The outbox: events written in the same transaction as their cause, webhook endpoints, and each event's
-- delivery to each subscribed endpoint (at least once; the event id lets receivers drop repeats).

-- Registered endpoints; the signing secret is sealed with the vault. Never deleted, only deactivated.
CREATE TABLE webhook_endpoints (
    endpoint_id    INTEGER PRIMARY KEY,
    url            TEXT NOT NULL,
    secret_sealed  BLOB NOT NULL,
    event_types    TEXT NOT NULL,
    description    TEXT,
    active         INTEGER NOT NULL,
    idem_key       TEXT NOT NULL UNIQUE,
    request_digest BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    deactivated_at INTEGER
);

-- Which endpoint wants which event type (`*`: all).
CREATE TABLE webhook_subscriptions (
    event_type  TEXT NOT NULL,
    endpoint_id INTEGER NOT NULL,
    PRIMARY KEY (event_type, endpoint_id)
);

-- Events in commit order (`seq`); `event_id` derives from the cause, so a replayed cause adds nothing.
CREATE TABLE outbox_events (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    member_id   INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX outbox_events_type ON outbox_events (event_type, seq);

-- One row per (endpoint, event): state pending → delivered, or dead after the last attempt.
CREATE TABLE webhook_deliveries (
    endpoint_id     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    PRIMARY KEY (endpoint_id, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
