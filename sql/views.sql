-- Views over schema.sql. Re-applied by init_db (CREATE OR REPLACE): idempotent.

-- Forecast rows of the newest run of every city (newest = latest issued_at; a re-publish of
-- the same issued_at replaces the run, so there is exactly one run per (city, issued_at)).
CREATE OR REPLACE VIEW latest_forecast AS
WITH newest AS (
    SELECT run_id, issued_at, model_name, model_version
    FROM forecast_runs
    QUALIFY row_number() OVER (PARTITION BY city ORDER BY issued_at DESC, published_at DESC) = 1
)
SELECT f.*, n.issued_at, n.model_name, n.model_version
FROM forecasts AS f
JOIN newest AS n USING (run_id);

-- Every (cell, time, channel) of the latest forecasts at level 'heavy' or worse, worst first.
-- Cells without data carry no level (CHECK in schema.sql) and are excluded explicitly too.
CREATE OR REPLACE VIEW hotspots AS
SELECT
    lf.city, lf.run_id, lf.issued_at, lf.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat,
    lf.target_time, lf.horizon, lf.channel, lf.value, lf.congestion_index, lf.congestion_level
FROM latest_forecast AS lf
LEFT JOIN cells AS c ON c.city = lf.city AND c.cell_id = lf.cell_id
WHERE lf.has_data AND lf.congestion_level IN ('heavy', 'severe')
ORDER BY lf.congestion_index DESC, lf.target_time, lf.city, lf.cell_id, lf.channel;
