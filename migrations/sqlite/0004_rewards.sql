-- The rewards catalog and redemptions.

-- A reward's definition (JSON, as operators wrote it) and what is left of its stock (NULL: unlimited).
CREATE TABLE rewards (
    reward_id  TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    stock_left INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Redemptions, keyed by member; the caller's idempotency key is unique per member forever.
CREATE TABLE redemptions (
    member_id     INTEGER NOT NULL,
    redemption_id INTEGER NOT NULL,
    reward_id     TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    state         TEXT NOT NULL,
    record        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (member_id, redemption_id),
    UNIQUE (member_id, idem_key)
);
CREATE INDEX redemptions_reward ON redemptions (member_id, reward_id);
