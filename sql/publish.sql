-- Named statements used by traffic.publish.duckdb_publish. Each block starts with
-- "-- name: <name>". Values are bound parameters ($name). staged_forecasts and staged_cells
-- are Arrow tables registered by the publisher for the duration of one transaction.
-- {relation} in read_relation is replaced by an identifier from the Python allow-list only.

-- name: run_exists
SELECT count(*) FROM forecast_runs WHERE run_id = $run_id;

-- name: delete_forecasts
DELETE FROM forecasts WHERE run_id = $run_id;

-- name: delete_run
DELETE FROM forecast_runs WHERE run_id = $run_id;

-- name: insert_run
INSERT INTO forecast_runs (
    run_id, city, model_name, model_version, mlflow_run_id, issued_at, data_start, data_end,
    horizon_steps, bin_seconds, published_at
) VALUES (
    $run_id, $city, $model_name, $model_version, $mlflow_run_id, $issued_at, $data_start, $data_end,
    $horizon_steps, $bin_seconds, $published_at
);

-- name: insert_forecasts
INSERT INTO forecasts (
    run_id, city, cell_id, target_time, horizon, channel, value, congestion_index, congestion_level, has_data
)
SELECT run_id, city, cell_id, target_time, horizon, channel, value, congestion_index, congestion_level, has_data
FROM staged_forecasts;

-- name: count_forecasts
SELECT count(*) FROM forecasts WHERE run_id = $run_id;

-- name: upsert_cells
INSERT OR REPLACE INTO cells (city, cell_id, "row", col, centroid_lon, centroid_lat, polygon_wkt)
SELECT city, cell_id, "row", col, centroid_lon, centroid_lat, polygon_wkt
FROM staged_cells;

-- name: latest_runs
SELECT
    r.*,
    (SELECT count(*) FROM forecasts AS f WHERE f.run_id = r.run_id) AS n_rows,
    (SELECT count(*) FROM forecasts AS f WHERE f.run_id = r.run_id AND f.has_data) AS n_rows_with_data
FROM forecast_runs AS r
QUALIFY row_number() OVER (PARTITION BY r.city ORDER BY r.issued_at DESC, r.published_at DESC) = 1
ORDER BY r.city;

-- name: read_relation
SELECT * FROM {relation} WHERE $city IS NULL OR city = $city;
