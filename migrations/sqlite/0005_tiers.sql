-- Tiers: each member's current tier state, and every change with its reason (the tier history).

CREATE TABLE member_tiers (
    member_id  INTEGER PRIMARY KEY,
    tier       TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE tier_changes (
    member_id INTEGER NOT NULL,
    change_id INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    from_tier TEXT NOT NULL,
    to_tier   TEXT NOT NULL,
    at        INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    record    TEXT NOT NULL,
    PRIMARY KEY (member_id, change_id)
);
