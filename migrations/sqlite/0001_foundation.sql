-- Foundation schema (SQLite). Instants are INTEGER microseconds since the Unix epoch, UTC.
-- Money is INTEGER minor units. member_id 0 marks guest orders and events not yet linked to a member.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    digest     TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE audit_log (
    audit_id  INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    member_id INTEGER,
    detail    TEXT NOT NULL
);
CREATE INDEX audit_log_member ON audit_log (member_id, audit_id);

CREATE TABLE channels (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL
);

CREATE TABLE stores (
    code    TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    name    TEXT NOT NULL,
    city    TEXT
);

CREATE TABLE skus (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    category_path TEXT,
    brand         TEXT,
    list_price    INTEGER NOT NULL,
    available     INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE members (
    member_id            INTEGER PRIMARY KEY,
    status               TEXT NOT NULL,
    name_sealed          BLOB,
    name_digest          TEXT,
    gender               TEXT,
    birthday             TEXT,
    city                 TEXT,
    country              TEXT,
    registered_at        INTEGER NOT NULL,
    registration_channel TEXT,
    consent_sms          INTEGER NOT NULL,
    consent_email        INTEGER NOT NULL,
    consent_wechat       INTEGER NOT NULL,
    consent_push         INTEGER NOT NULL,
    merged_into          INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX members_registered ON members (registered_at);

-- The identity directory: (kind, key) is unique across the shop. The most selective column leads the
-- key, so batch look-ups (`id_key IN (...)`) are index scans whatever the planner's statistics say.
CREATE TABLE identities (
    kind      TEXT NOT NULL,
    id_key    TEXT NOT NULL,
    member_id INTEGER NOT NULL,
    sealed    BLOB,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (id_key, kind)
);
CREATE INDEX identities_member ON identities (member_id);

-- Natural keys of orders and refunds ((channel, order_no), (channel, refund_no)) with the digest of what
-- was stored, so a retry is recognised and a different body under the same key is refused.
CREATE TABLE natural_keys (
    kind         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    reference    TEXT NOT NULL,
    member_id    INTEGER NOT NULL,
    entity_id    INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    PRIMARY KEY (reference, channel, kind)
);

CREATE TABLE orders (
    order_id       INTEGER PRIMARY KEY,
    member_id      INTEGER NOT NULL,
    channel        TEXT NOT NULL,
    order_no       TEXT NOT NULL,
    store          TEXT,
    status         TEXT NOT NULL,
    placed_at      INTEGER NOT NULL,
    paid_at        INTEGER,
    currency       TEXT NOT NULL,
    subtotal       INTEGER NOT NULL,
    discount_total INTEGER NOT NULL,
    shipping_fee   INTEGER NOT NULL,
    total          INTEGER NOT NULL,
    coupon_code    TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX orders_member ON orders (member_id, placed_at);

CREATE TABLE order_lines (
    member_id  INTEGER NOT NULL,
    order_id   INTEGER NOT NULL,
    line_no    INTEGER NOT NULL,
    sku        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    unit_price INTEGER NOT NULL,
    discount   INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE refunds (
    refund_id       INTEGER PRIMARY KEY,
    member_id       INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    refund_no       TEXT NOT NULL,
    order_id        INTEGER,
    refunded_at     INTEGER NOT NULL,
    shipping_refund INTEGER NOT NULL,
    amount          INTEGER NOT NULL,
    reason          TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX refunds_member ON refunds (member_id, refunded_at);
CREATE INDEX refunds_order ON refunds (order_id);

CREATE TABLE refund_lines (
    member_id INTEGER NOT NULL,
    refund_id INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    order_id  INTEGER,
    line_no   INTEGER,
    sku       TEXT,
    quantity  INTEGER NOT NULL,
    amount    INTEGER NOT NULL,
    PRIMARY KEY (refund_id, idx)
);
CREATE INDEX refund_lines_order ON refund_lines (order_id, line_no);

CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY,
    member_id    INTEGER NOT NULL,
    event_key    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    anonymous_id TEXT,
    session_id   TEXT,
    channel      TEXT NOT NULL,
    sku          TEXT,
    properties   TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (member_id, event_key)
);
CREATE INDEX events_member_time ON events (member_id, occurred_at);
CREATE INDEX events_unlinked ON events (anonymous_id) WHERE member_id = 0;

CREATE TABLE member_merges (
    merge_id       INTEGER PRIMARY KEY,
    member_id      INTEGER NOT NULL,
    from_member_id INTEGER NOT NULL,
    merged_at      INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX member_merges_member ON member_merges (member_id);

CREATE TABLE idempotency_keys (
    scope          TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    status         INTEGER,
    response       TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
