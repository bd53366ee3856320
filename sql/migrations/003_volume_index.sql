-- 003: congestion means congestion (docs/congestion.md). A volume channel (counts, occupancy) gets no
-- congestion index: its closeness to the cell's usual peak is its own volume_index (share of the cell's
-- p95 volume, floored at the channel's median p95) and volume_level ('quiet', 'normal', 'busy',
-- 'peak'; checked by the publisher). congestion_index / congestion_level are speeds only, NULL for
-- volume rows. Runs published before read NULL here (their forecasts.parquet lacks the columns).
ALTER TABLE layout.forecasts ADD COLUMN IF NOT EXISTS volume_index DOUBLE;
ALTER TABLE layout.forecasts ADD COLUMN IF NOT EXISTS volume_level VARCHAR;
