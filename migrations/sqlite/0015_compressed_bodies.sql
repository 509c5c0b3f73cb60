-- Member bodies are stored as zstd frames compressed with a dictionary trained on each run's own bodies
-- (src/store/body_codec.rs): a million bodies of about 3 KB each were 2.9 GB of JSON per run. The run's
-- dictionary lives with the run, and is cleared when the run's member rows are deleted. Bodies stored before
-- this migration stay JSON text in `member_analytics.body` and are read as they are.
ALTER TABLE analytics_runs ADD COLUMN body_dict BLOB;
