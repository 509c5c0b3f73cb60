-- The coupon sweep: unused coupons by the end of their window (to expire them, and to remind members
-- before), and when the member was reminded, so each coupon is reminded of once.
ALTER TABLE coupons ADD COLUMN expiry_warned_at TIMESTAMPTZ;
CREATE INDEX coupons_available_until ON coupons (valid_until) WHERE state = 'available';
