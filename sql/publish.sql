-- Named statements used by traffic.publish.duckdb_publish. Each block starts with
-- "-- name: <name>". Values are bound parameters ($name). {relation}, {files} and {layout}
-- are replaced by the publisher only: {relation} by an identifier from the Python allow-list,
-- {layout} by a layout table name of sql/migrations (an identifier from the Python allow-list), {files} by a list of quoted absolute paths
-- of Parquet files the publisher listed in its own store (view bodies cannot take parameters).
-- A source statement is one line without comments (it is also put into a comment of views.sql).
-- source_by_name reads a layout table's files by column name against the newest layout: a run
-- published before a migration added a column (its run.parquet or forecasts.parquet lacks it)
-- reads NULL there.

-- name: source_files
read_parquet([{files}], hive_partitioning = true, hive_types = {'city': VARCHAR, 'run_id': VARCHAR}, filename = true)

-- name: source_by_name
(SELECT *, CAST(NULL AS VARCHAR) AS filename FROM layout.{layout} UNION ALL BY NAME SELECT * FROM read_parquet([{files}], hive_partitioning = true, hive_types = {'city': VARCHAR, 'run_id': VARCHAR}, union_by_name = true, filename = true))

-- name: source_empty
(SELECT *, CAST(NULL AS VARCHAR) AS filename FROM layout.{layout})

-- name: stage_rows
INSERT INTO layout.{layout} BY NAME SELECT * FROM staged;

-- name: staged_rows
SELECT * EXCLUDE (city, run_id) FROM layout.{layout} ORDER BY ALL;

-- name: latest_run_ids
SELECT run_id FROM forecast_runs WHERE is_latest;

-- name: latest_runs
SELECT r.*
FROM forecast_runs AS r
WHERE r.is_latest
ORDER BY r.city;

-- name: read_relation
SELECT * FROM {relation} WHERE $city IS NULL OR city = $city;

-- name: cities_with_runs
SELECT city, count(*) AS runs FROM forecast_runs GROUP BY city ORDER BY city;
