-- Who referred whom (邀请): set once, when the referee joins or later, never changed. The referral rule pays
-- both sides on the referee's first paid order; the referrer's share is queued with the order.
CREATE TABLE referrals (
    member_id   BIGINT PRIMARY KEY,
    referrer_id BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX referrals_referrer ON referrals (referrer_id);
