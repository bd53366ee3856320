-- Named statements used by traffic.publish.export (maps of a published run). Each block starts
-- with "-- name: <name>". Values are bound parameters ($name); nothing is formatted into the text.
-- Only the stable relation names forecast_runs, forecasts and cells are read, so the statements
-- work whether those are tables or views (e.g. over per-run Parquet files).

-- name: cities
SELECT DISTINCT city FROM forecast_runs ORDER BY city;

-- name: runs
-- The city's runs, newest (latest issued_at) first: the first row is the default run.
SELECT run_id, city, model_name, model_version, mlflow_run_id, issued_at, horizon_steps, bin_seconds
FROM forecast_runs
WHERE city = $city
ORDER BY issued_at DESC, run_id DESC;

-- name: channels
SELECT DISTINCT channel FROM forecasts WHERE run_id = $run_id ORDER BY channel;

-- name: rows
-- One row per (cell, target_time, channel) of one run, with the cell's grid position and WGS84
-- outline. lower/upper (a forecast interval) are taken when the forecasts relation has them: the
-- COLUMNS expression keeps only the listed columns that exist. $channel NULL = every channel.
WITH f AS (
    SELECT COLUMNS(lambda c: list_contains(
        ['cell_id', 'target_time', 'horizon', 'channel', 'value', 'lower', 'upper',
         'congestion_index', 'congestion_level', 'has_data'], c))
    FROM forecasts
    WHERE run_id = $run_id AND ($channel IS NULL OR channel = $channel)
)
SELECT f.*, c."row", c.col, c.centroid_lon, c.centroid_lat, c.polygon_wkt
FROM f
JOIN cells AS c ON c.city = $city AND c.cell_id = f.cell_id
ORDER BY f.target_time, f.channel, f.cell_id;
