-- Paid membership cards (付费会员): one row per purchased term, with the benefits as sold. A renewal is a
-- new term starting where the last one ends; the idempotency key makes a retried purchase a replay.

CREATE TABLE member_cards (
    card_id     INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL,
    plan        TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    payment_ref TEXT,
    bought_at   INTEGER NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    term        TEXT NOT NULL,
    bought_by   TEXT NOT NULL,
    UNIQUE (member_id, idem_key)
);
CREATE INDEX member_cards_member ON member_cards (member_id, ends_at);
