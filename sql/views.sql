-- The analysts' relations in the catalog file (var/forecasts.duckdb), built by
-- traffic.publish.duckdb_publish.rebuild_catalog into a NEW file that then replaces the old
-- one (docs/publishing.md). Applied after the layout migrations (sql/migrations).
--
-- {runs}, {forecasts}, {latest_forecasts}, {run_cells}, {cells}, {cell_channels}, {forecast_skill},
-- {cell_skill} are replaced
-- by the publisher with a source: read_parquet([...absolute paths of one file per run...],
-- hive_partitioning = true, filename = true) over the runs listed in the store when the catalog was built (see
-- the "source_files" statement of publish.sql), or the empty layout table when there is none.
-- The file lists are fixed at build time: a session keeps seeing the runs of the catalog it
-- opened, whatever is published meanwhile. city and run_id come from the folder names (hive
-- keys), so a filter on run_id reads only that run's files.

-- One row per run in the store (only the newest version of a re-published run).
CREATE OR REPLACE TABLE forecast_runs AS
SELECT
    r.run_id, r.city, r.model_name, r.model_version, r.model_kind, r.kind, r.mlflow_run_id,
    r.issued_at, r.data_start, r.data_end, r.horizon_steps, r.bin_seconds, r.target_start, r.target_end,
    r.timezone, r.channels, r.interval_level, r.interval_method, r.n_rows, r.n_cells, r.n_cells_with_data,
    r.published_at, r.version, r.code_version, r.model_spec,
    parse_dirpath(r.filename) AS folder,                -- absolute path of the run version's files
    -- the newest run of the city; a replay (a past day issued after the fact) only when nothing else exists
    row_number() OVER (
        PARTITION BY r.city ORDER BY (r.kind = 'replay'), r.issued_at DESC, r.published_at DESC
    ) = 1 AS is_latest
FROM {runs} AS r;

-- @views: (the publisher builds forecast_runs first, then picks the newest run of each city for the views below)

-- Forecast rows of every run (only (cell, channel) pairs with data; layout.forecasts).
CREATE OR REPLACE VIEW forecasts AS
SELECT
    f.run_id, f.city, f.cell_id, f.target_time, f.horizon, f.channel, f.value, f.lower, f.upper,
    f.congestion_index, f.congestion_level, f.has_data, f.volume_index, f.volume_level
FROM {forecasts} AS f;

-- Rows of the newest run (latest issued_at) of each city, with the run's model. The file list
-- holds exactly those runs' files.
CREATE OR REPLACE VIEW latest_forecast AS
SELECT
    f.run_id, f.city, f.cell_id, f.target_time, f.horizon, f.channel, f.value, f.lower, f.upper,
    f.congestion_index, f.congestion_level, f.has_data, f.volume_index, f.volume_level,
    r.issued_at, r.model_name, r.model_version, r.model_kind, r.kind, r.interval_level
FROM {latest_forecasts} AS f
JOIN forecast_runs AS r ON r.run_id = f.run_id;

-- Every grid cell of every run, with that run's coverage (layout.cells).
CREATE OR REPLACE VIEW run_cells AS
SELECT
    c.run_id, c.city, c.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat, c.polygon_wkt,
    c.has_data, c.coverage, c.n_channels_with_data
FROM {run_cells} AS c;

-- The grid of each city: every cell, with the coverage of the city's newest run (run_id says which).
CREATE OR REPLACE VIEW cells AS
SELECT
    c.city, c.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat, c.polygon_wkt,
    c.has_data, c.coverage, c.n_channels_with_data, c.run_id
FROM {cells} AS c;

-- Every (cell, channel) of every run: has_data, coverage, congestion reference (layout.cell_channels).
CREATE OR REPLACE VIEW cell_channels AS
SELECT c.run_id, c.city, c.cell_id, c.channel, c.has_data, c.coverage, c.reference
FROM {cell_channels} AS c;

-- Where will it jam: per city, the newest run that covers now() (target_start <= now() <
-- target_end), else the city's newest run; its (cell, time, channel) rows at level moderate
-- or worse, worst first. sql/hotspots.sql answers the same for any time and window.
CREATE OR REPLACE VIEW hotspots AS
WITH chosen AS (
    SELECT run_id
    FROM forecast_runs
    QUALIFY row_number() OVER (
        PARTITION BY city
        ORDER BY (target_start <= now() AND now() < target_end) DESC, issued_at DESC, published_at DESC
    ) = 1
)
SELECT
    f.city, f.run_id, r.issued_at, r.model_name, r.model_version, r.model_kind, f.cell_id, c."row", c.col,
    c.centroid_lon, c.centroid_lat, f.target_time, f.horizon, f.channel, f.value, f.lower, f.upper,
    f.congestion_index, f.congestion_level
FROM forecasts AS f
JOIN chosen AS ch ON ch.run_id = f.run_id
JOIN forecast_runs AS r ON r.run_id = f.run_id
LEFT JOIN run_cells AS c ON c.run_id = f.run_id AND c.cell_id = f.cell_id
WHERE f.congestion_level IN ('moderate', 'heavy', 'severe')
ORDER BY f.congestion_index DESC, f.target_time, f.city, f.cell_id, f.channel;

-- ---------------------------------------------------------------- verification (traffic.verify)
-- How good were the published forecasts: each verified run scored against the raster that landed
-- for its target bins, next to the seasonal reference issued from the same data
-- (sql/migrations/005_skill.sql; docs/publishing.md "Verification"). Pooled figures are computed
-- from the sums (root of summed squared errors over the summed count, ...) and rounded to 4
-- decimals HERE, once: `traffic skill`, the live.* metrics in MLflow and these views show the
-- same numbers to the last digit.

CREATE OR REPLACE MACRO skill_ratio(num, den) AS round(sum(num) / nullif(sum(den), 0), 4);
CREATE OR REPLACE MACRO skill_rmse(sq, n) AS round(sqrt(sum(sq) / nullif(sum(n), 0)), 4);
CREATE OR REPLACE MACRO skill_vs_ref(sq, ref_sq) AS round(1 - sqrt(sum(sq) / nullif(sum(ref_sq), 0)), 4);

-- One row per (verified run, channel, horizon group) (layout.forecast_skill), from the newest
-- verification of every run.
CREATE OR REPLACE TABLE forecast_skill AS
SELECT
    s.run_id, s.city, s.issued_at, s.target_date, s.kind, s.model_kind, s.model_version, s.mlflow_run_id,
    s.model_spec, s.channel, s.horizon_group, s.first_horizon, s.last_horizon, s.n, s.mae, s.rmse, s.bias,
    s.coverage, s.level_hit_rate, s.ref_mae, s.ref_rmse, s.ref_bias, s.skill, s.sum_abs_err, s.sum_sq_err,
    s.sum_err, s.n_interval, s.n_covered, s.n_level, s.n_level_hit, s.ref_sum_abs_err, s.ref_sum_sq_err,
    s.ref_sum_err, s.reference_kind, s.grid_digest
FROM {forecast_skill} AS s;

-- One row per (verified run, channel, cell) over all its horizons (layout.cell_skill).
CREATE OR REPLACE VIEW cell_skill AS
SELECT
    c.run_id, c.city, c.cell_id, c.channel, c.n, c.mae, c.rmse, c.bias, c.coverage, c.level_hit_rate,
    c.ref_mae, c.ref_rmse, c.ref_bias, c.skill, c.sum_abs_err, c.sum_sq_err, c.sum_err, c.n_interval,
    c.n_covered, c.n_level, c.n_level_hit, c.ref_sum_abs_err, c.ref_sum_sq_err, c.ref_sum_err
FROM {cell_skill} AS c;

-- The sums of the day-ahead forecasts (kind nightly or replay: issued at local midnight for the
-- next day) per city, target day, channel, horizon group and what served; channel 'all' pools every
-- channel (as the holdout metrics do). Built once with the catalog: the windows below only add rows.
CREATE OR REPLACE TABLE skill_sums AS
SELECT
    city, target_date, coalesce(channel, 'all') AS channel, horizon_group, min(first_horizon) AS first_horizon,
    mlflow_run_id, model_kind, model_version, count(DISTINCT run_id) AS runs, sum(n) AS n,
    sum(sum_abs_err) AS sum_abs_err, sum(sum_sq_err) AS sum_sq_err, sum(sum_err) AS sum_err,
    sum(n_interval) AS n_interval, sum(n_covered) AS n_covered, sum(n_level) AS n_level,
    sum(n_level_hit) AS n_level_hit, sum(ref_sum_sq_err) AS ref_sum_sq_err
FROM forecast_skill
WHERE kind IN ('nightly', 'replay')
GROUP BY GROUPING SETS (
    (city, target_date, channel, horizon_group, mlflow_run_id, model_kind, model_version),
    (city, target_date, horizon_group, mlflow_run_id, model_kind, model_version)
);

-- Per city, target day and channel ('all': pooled), over target days first_day .. last_day (NULL: unbounded).
CREATE OR REPLACE MACRO skill_days(for_city, first_day, last_day) AS TABLE
SELECT
    city, target_date, channel,
    string_agg(DISTINCT model_kind, ',' ORDER BY model_kind) AS model_kind,
    string_agg(DISTINCT model_version, ',' ORDER BY model_version) AS model_version,
    max(runs) AS runs, sum(n) AS n,
    skill_rmse(sum_sq_err, n) AS rmse, skill_ratio(sum_abs_err, n) AS mae, skill_ratio(sum_err, n) AS bias,
    skill_ratio(n_covered, n_interval) AS coverage, skill_ratio(n_level_hit, n_level) AS level_hit_rate,
    skill_rmse(ref_sum_sq_err, n) AS ref_rmse, skill_vs_ref(sum_sq_err, ref_sum_sq_err) AS skill
FROM skill_sums
WHERE (for_city IS NULL OR city = for_city)
  AND (first_day IS NULL OR target_date >= first_day)
  AND (last_day IS NULL OR target_date <= last_day)
GROUP BY city, target_date, channel;

-- Per city, channel ('all': pooled) and horizon group over target days first_day .. last_day (NULL:
-- unbounded), of the runs served by MLflow run served_by (NULL: any).
CREATE OR REPLACE MACRO skill_groups(for_city, first_day, last_day, served_by) AS TABLE
SELECT
    city, channel, horizon_group, min(first_horizon) AS first_horizon,
    string_agg(DISTINCT model_kind, ',' ORDER BY model_kind) AS model_kind,
    count(DISTINCT target_date) AS days, min(target_date) AS first_day, max(target_date) AS last_day,
    sum(n) AS n,
    skill_rmse(sum_sq_err, n) AS rmse, skill_ratio(sum_abs_err, n) AS mae, skill_ratio(sum_err, n) AS bias,
    skill_ratio(n_covered, n_interval) AS coverage, skill_ratio(n_level_hit, n_level) AS level_hit_rate,
    skill_rmse(ref_sum_sq_err, n) AS ref_rmse, skill_vs_ref(sum_sq_err, ref_sum_sq_err) AS skill
FROM skill_sums
WHERE (for_city IS NULL OR city = for_city)
  AND (first_day IS NULL OR target_date >= first_day)
  AND (last_day IS NULL OR target_date <= last_day)
  AND (served_by IS NULL OR mlflow_run_id = served_by)
GROUP BY city, channel, horizon_group;

-- How good were the day-ahead forecasts, per city, target day and channel ('all' = pooled).
-- Materialised when the catalog is built (a small table: a reader's question is a filter).
CREATE OR REPLACE TABLE skill_daily_rows AS
SELECT * FROM skill_days(NULL, NULL, NULL)
ORDER BY city, target_date, channel = 'all' DESC, channel;
CREATE OR REPLACE VIEW skill_daily AS SELECT * FROM skill_daily_rows;

-- ... and per city, channel ('all' = pooled) and horizon group over every verified day.
CREATE OR REPLACE VIEW skill_by_horizon AS
SELECT * FROM skill_groups(NULL, NULL, NULL, NULL)
ORDER BY city, channel = 'all' DESC, channel, first_horizon;
