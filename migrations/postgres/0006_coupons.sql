-- Coupons (优惠券): templates, issued coupons and issue requests.

-- A template's definition (JSON, as operators wrote it) and how many coupons of it were issued.
CREATE TABLE coupon_templates (
    template_id TEXT PRIMARY KEY,
    body        JSONB NOT NULL,
    issued      BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Issued coupons: the code is unique across the shop; `record` is the coupon as the kernel sees it, the
-- other columns are kept for look-ups.
CREATE TABLE coupons (
    code        TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    member_id   BIGINT NOT NULL,
    state       TEXT NOT NULL,
    order_id    BIGINT,
    valid_from  TIMESTAMPTZ NOT NULL,
    valid_until TIMESTAMPTZ NOT NULL,
    redeemed_at TIMESTAMPTZ,
    issue_key   TEXT NOT NULL,
    record      JSONB NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX coupons_member ON coupons (member_id, template_id);
CREATE INDEX coupons_template ON coupons (template_id);
CREATE INDEX coupons_order ON coupons (order_id);

-- One row per issue request, so a retried request (same key) answers with the original result.
CREATE TABLE coupon_issues (
    template_id    TEXT NOT NULL,
    issue_key      TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    result         JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (template_id, issue_key)
);
