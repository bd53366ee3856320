-- 002: the code that published a run (traffic.provenance.code_version: git commit, "-dirty"
-- when tracked files differed, or TRAFFIC_CODE_VERSION). NULL for runs published before it was
-- recorded: their run.parquet files have no such column and read as NULL (sql/publish.sql
-- "source_runs" reads run files by name against this layout).
ALTER TABLE layout.forecast_runs ADD COLUMN IF NOT EXISTS code_version VARCHAR;
