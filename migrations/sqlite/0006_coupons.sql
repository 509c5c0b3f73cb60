-- Coupons (优惠券): templates, issued coupons and issue requests.

-- A template's definition (JSON, as operators wrote it) and how many coupons of it were issued.
CREATE TABLE coupon_templates (
    template_id TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    issued      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Issued coupons: the code is unique across the shop; `record` is the coupon as the kernel sees it, the
-- other columns are kept for look-ups.
CREATE TABLE coupons (
    code        TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    member_id   INTEGER NOT NULL,
    state       TEXT NOT NULL,
    order_id    INTEGER,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    redeemed_at INTEGER,
    issue_key   TEXT NOT NULL,
    record      TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX coupons_member ON coupons (member_id, template_id);
CREATE INDEX coupons_template ON coupons (template_id);
CREATE INDEX coupons_order ON coupons (order_id);

-- One row per issue request, so a retried request (same key) answers with the original result.
CREATE TABLE coupon_issues (
    template_id    TEXT NOT NULL,
    issue_key      TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    result         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (template_id, issue_key)
);
