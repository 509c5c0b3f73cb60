-- An analysis run reads every member's points movements. The member index now carries every column that
-- read needs, so it scans the index alone: the table holds each entry's request and source as well, and a
-- million-member ledger's table is several times the size of this index. Reading a member's ledger in
-- entry order uses the index as before.
DROP INDEX ledger_entries_member;
CREATE INDEX ledger_entries_member ON ledger_entries (member_id, entry_id, wallet, kind, state, at, amount);

-- Keyword tags read members' reviews and notes, a small share of all events: without this index the read
-- walks every event.
CREATE INDEX events_texts ON events (member_id, occurred_at) WHERE event_type IN ('custom.review', 'custom.note');
