-- Behaviour analytics: each `huiyuan analyze` (or scheduled) run is versioned; its aggregates and per-member
-- results are kept per run, members' segment and stage changes are logged with the reason, and tags carry a
-- weight that decays between runs.

CREATE TABLE analytics_runs (
    run_id      INTEGER PRIMARY KEY,
    as_of       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL,
    params      TEXT NOT NULL,
    summary     TEXT
);

-- One aggregate result per model and run (RFM summary, CLV model, churn metrics, cohorts, rules, KPIs, …).
CREATE TABLE analytics_results (
    run_id INTEGER NOT NULL,
    model  TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, model)
);

-- Per member and run: the columns a segment query filters on, and the whole explained result.
CREATE TABLE member_analytics (
    member_id     INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    rfm_segment   TEXT,
    stage         TEXT NOT NULL,
    clv_fen       INTEGER,
    prob_alive    REAL,
    churn_risk    REAL,
    cluster       INTEGER,
    next_purchase TEXT,
    body          TEXT NOT NULL,
    PRIMARY KEY (member_id, run_id)
);
CREATE INDEX member_analytics_run ON member_analytics (run_id, rfm_segment);

-- Segment and stage changes between consecutive runs, with the reason an operator reads.
CREATE TABLE member_analytics_changes (
    run_id    INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    model     TEXT NOT NULL,
    from_value TEXT,
    to_value  TEXT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (run_id, member_id, model)
);
CREATE INDEX member_analytics_changes_member ON member_analytics_changes (member_id, run_id);

-- Current member tags (rule, model, keyword, manual) with their decaying weight: `weight` as of the run
-- that wrote it, `support_weight` as of `last_supported_at` (the next run decays from it).
CREATE TABLE member_tags (
    member_id         INTEGER NOT NULL,
    source            TEXT NOT NULL,
    tag               TEXT NOT NULL,
    category          TEXT NOT NULL,
    weight            REAL NOT NULL,
    support_weight    REAL NOT NULL,
    last_supported_at INTEGER NOT NULL,
    first_tagged_at   INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    run_id            INTEGER,
    PRIMARY KEY (member_id, source, tag)
);
CREATE INDEX member_tags_tag ON member_tags (tag, weight);
