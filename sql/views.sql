-- The analysts' relations in the catalog file (var/forecasts.duckdb), built by
-- traffic.publish.duckdb_publish.rebuild_catalog into a NEW file that then replaces the old
-- one (docs/publishing.md). Applied after the layout migrations (sql/migrations).
--
-- {runs}, {forecasts}, {latest_forecasts}, {run_cells}, {cells}, {cell_channels} are replaced
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
    r.published_at, r.version, r.code_version,
    parse_dirpath(r.filename) AS folder,                -- absolute path of the run version's files
    row_number() OVER (PARTITION BY r.city ORDER BY r.issued_at DESC, r.published_at DESC) = 1 AS is_latest
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
