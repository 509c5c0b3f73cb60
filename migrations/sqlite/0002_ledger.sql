-- The loyalty ledger: append-only entries per member. An entry's key is unique within its member's
-- ledger (every operation key is scoped to one member).
CREATE TABLE ledger_entries (
    entry_id     INTEGER PRIMARY KEY,
    member_id    INTEGER NOT NULL,
    entry_key    TEXT NOT NULL,
    op           TEXT NOT NULL,
    request      TEXT NOT NULL,
    wallet       TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    state        TEXT NOT NULL,
    available_at INTEGER,
    source       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    lot          TEXT,
    expires_at   INTEGER,
    UNIQUE (member_id, entry_key)
);
CREATE INDEX ledger_entries_member ON ledger_entries (member_id, entry_id);
