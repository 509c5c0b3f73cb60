-- Risk control: flags raised by velocity limits. Never deleted; clearing (an operator, with a note) keeps
-- the row. At most one open flag per member and rule.

CREATE TABLE risk_flags (
    member_id  INTEGER NOT NULL,
    flag_id    INTEGER NOT NULL,
    rule       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    raised_at  INTEGER NOT NULL,
    cleared_at INTEGER,
    cleared_by TEXT,
    note       TEXT,
    PRIMARY KEY (member_id, flag_id)
);
CREATE UNIQUE INDEX risk_flags_open ON risk_flags (member_id, rule) WHERE cleared_at IS NULL;
