-- Keyword tags read members' reviews and notes, a small share of all events: without this index the read
-- walks every event.
CREATE INDEX events_texts ON events (member_id, occurred_at) WHERE event_type IN ('custom.review', 'custom.note');
