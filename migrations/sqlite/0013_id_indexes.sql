-- Ids of these tables are allocated as MAX(id) + 1 under the single writer. Their primary keys lead with
-- member_id, so without an index on the id itself every allocation scans the whole table: a settle of the
-- demo shop spent a third of its time finding the largest tier change id.
CREATE INDEX tier_changes_change_id ON tier_changes (change_id);
CREATE INDEX redemptions_redemption_id ON redemptions (redemption_id);
CREATE INDEX risk_flags_flag_id ON risk_flags (flag_id);
