-- Named statements used by traffic.publish.export (maps of a published run). Each block starts
-- with "-- name: <name>". Values are bound parameters ($name); nothing is formatted into the text.
-- Only the catalog's stable relations are read (sql/views.sql): forecast_runs, forecasts (rows
-- only for the (cell, channel) pairs with data) and run_cells (EVERY grid cell of every run,
-- with its coverage; the cells view holds only each city's newest run, so it is not used here).
-- A filter on run_id reads only that run's files (hive key).

-- name: cities
SELECT DISTINCT city FROM forecast_runs ORDER BY city;

-- name: runs
-- The city's runs, newest (latest issued_at) first: the first row is the default run.
SELECT run_id, city, model_name, model_version, mlflow_run_id, issued_at, target_start, horizon_steps,
       bin_seconds, channels
FROM forecast_runs
WHERE city = $city
ORDER BY issued_at DESC, run_id DESC;

-- name: cells
-- Every grid cell of one run (with or without data), WGS84 outline and the run's coverage.
SELECT cell_id, "row", col, centroid_lon, centroid_lat, polygon_wkt, has_data, coverage
FROM run_cells
WHERE run_id = $run_id
ORDER BY cell_id;

-- name: rows
-- The published forecast rows of one run: one per (cell, target_time, channel) WITH data (cells
-- without data have none), with the cell's grid position and WGS84 outline. lower/upper are NULL
-- where the run has no bounds. $channel NULL = every channel.
SELECT f.cell_id, f.target_time, f.horizon, f.channel, f.value, f.lower, f.upper, f.congestion_index,
       f.congestion_level, f.volume_index, f.volume_level, f.has_data, c."row", c.col, c.centroid_lon,
       c.centroid_lat, c.polygon_wkt
FROM forecasts AS f
JOIN run_cells AS c ON c.run_id = f.run_id AND c.cell_id = f.cell_id
WHERE f.run_id = $run_id AND ($channel IS NULL OR f.channel = $channel)
ORDER BY f.target_time, f.channel, f.cell_id;

-- name: n_rows
-- Forecast rows of the run in the catalog, whatever their cell: must equal what "rows" returns.
SELECT count(*) FROM forecasts WHERE run_id = $run_id AND ($channel IS NULL OR channel = $channel);
