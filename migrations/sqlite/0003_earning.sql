-- Earning: rule sets by version, the loyalty work queue, and the rule evaluations behind ledger entries.

-- Every version of the earning rules ever stored; the highest is in force. Versions are never edited.
CREATE TABLE rule_sets (
    version    INTEGER PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    actor      TEXT NOT NULL
);

-- Work the loyalty engine owes: written in the same transaction as the order, refund, event or member
-- change that causes it, removed in the same transaction as the ledger entries it produces. A crash in
-- between leaves the task queued, and its ledger operation is idempotent, so nothing is lost or doubled.
CREATE TABLE loyalty_queue (
    task_id    INTEGER PRIMARY KEY,
    member_id  INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    ref        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    failed_at  INTEGER,
    error      TEXT
);
-- Settled member by member (each member's tasks in order), so a batch loads each ledger once.
CREATE INDEX loyalty_queue_open ON loyalty_queue (member_id, task_id) WHERE failed_at IS NULL;

-- Why an operation earned what it did: the rule evaluation (effects and per-rule reasons), by operation key.
CREATE TABLE loyalty_evaluations (
    member_id    INTEGER NOT NULL,
    op           TEXT NOT NULL,
    rule_version INTEGER NOT NULL,
    evaluation   TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (member_id, op)
);
