-- sql/schema.sql as of commit 822e9f0 (before the numbered migrations), verbatim below this line: the
-- "CREATE TABLE IF NOT EXISTS" schema a database made by older code holds (tests/publish/test_migrations.py).
-- Layout of the published forecast store (DuckDB). Applied by traffic.publish.duckdb_publish;
-- every statement is idempotent. How the store works (per-run Parquet + a catalog file that is
-- swapped atomically): docs/publishing.md.
--
-- The tables below live in schema "layout" and stay EMPTY. They are the contract of the
-- per-run Parquet files: a publish inserts its rows into these tables in a private in-memory
-- DuckDB (so NOT NULL / CHECK / PRIMARY KEY are enforced before anything is written), reads
-- them back in exactly these types and writes them as Parquet. city and run_id are not stored
-- inside the files: they are the hive keys of the run's folder
--   <store>/runs/city=<city>/run_id=<run_id>/v-<version>/{run,forecasts,cells,cell_channels}.parquet
-- The catalog (var/forecasts.duckdb) holds these empty tables, the forecast_runs table and the
-- views of views.sql over the files.
--
-- One run = one city's forecast issued at one time. run_id is derived from (city, issued_at),
-- so re-publishing the same forecast replaces it. All times are UTC instants (TIMESTAMPTZ).

CREATE SCHEMA IF NOT EXISTS layout;

-- run.parquet: one row per run (one file per run version).
CREATE TABLE IF NOT EXISTS layout.forecast_runs (
    run_id          VARCHAR     NOT NULL,            -- '<city>_<issued_at as YYYYMMDDTHHMMSSZ>'
    city            VARCHAR     NOT NULL,
    model_name      VARCHAR     NOT NULL,            -- MLflow registered model name
    model_version   VARCHAR     NOT NULL,            -- MLflow model version (or a baseline tag)
    model_kind      VARCHAR     NOT NULL,            -- 'model' (registered network) or the baseline published, e.g. 'gbm'
    kind            VARCHAR     NOT NULL CHECK (kind IN ('nightly', 'refresh')),
    mlflow_run_id   VARCHAR,                         -- MLflow run that trained the model
    issued_at       TIMESTAMPTZ NOT NULL,            -- the forecast's "now"; targets start at or after it
    data_start      TIMESTAMPTZ,                     -- first bin of the input window
    data_end        TIMESTAMPTZ,                     -- last bin of the input window
    horizon_steps   INTEGER     NOT NULL CHECK (horizon_steps >= 1),
    bin_seconds     INTEGER     NOT NULL CHECK (bin_seconds > 0),
    target_start    TIMESTAMPTZ NOT NULL,            -- first target bin start
    target_end      TIMESTAMPTZ NOT NULL,            -- last target bin start + bin: the run covers [target_start, target_end)
    timezone        VARCHAR     NOT NULL,            -- the city's IANA zone, for local wall-clock times
    channels        VARCHAR[]   NOT NULL,            -- channel names of the forecast, in model order
    interval_level  DOUBLE CHECK (interval_level > 0 AND interval_level < 1),  -- 0.8: [lower, upper] is an 80 % interval
    interval_method VARCHAR,                         -- how the bounds were made (e.g. 'conformal'); NULL without bounds
    n_rows          BIGINT      NOT NULL,            -- rows in forecasts.parquet: readers can check a run is whole
    n_cells         INTEGER     NOT NULL,            -- grid cells (rows of cells.parquet)
    n_cells_with_data INTEGER   NOT NULL,            -- cells with data for at least one channel
    published_at    TIMESTAMPTZ NOT NULL,
    version         VARCHAR     NOT NULL,            -- 'v-<published_at>-<random>': the folder of this publish
    CHECK (target_start >= issued_at AND target_end > target_start)
);

-- forecasts.parquet: one row per (cell, horizon, channel) the model had data for. Pairs without
-- data (the cell never observed the channel in the input window, or has no reference) are NOT
-- published: see cell_channels for them. So every row has data (has_data is always TRUE; the
-- column is kept for queries written against the old layout) and carries an index and a level
-- unless the model gave no value.
CREATE TABLE IF NOT EXISTS layout.forecasts (
    run_id            VARCHAR     NOT NULL,
    city              VARCHAR     NOT NULL,
    cell_id           INTEGER     NOT NULL,
    target_time       TIMESTAMPTZ NOT NULL,          -- start of the forecast bin
    horizon           SMALLINT    NOT NULL CHECK (horizon >= 1),   -- 1 = first bin ahead
    channel           VARCHAR     NOT NULL,          -- '<feed>.<channel>', e.g. 'metr.speed_kmh'
    -- forecast in original units: km/h for *.speed_kmh and occupancy as observed; for a count
    -- channel (count, car, heavy, bike, pedestrian) the MEAN COUNT PER REPORTING SOURCE in the
    -- cell and bin (traffic/grid/rasterize.py, docs/congestion.md), not the cell's total.
    -- NULL: the model gave no value.
    value             DOUBLE,
    lower             DOUBLE,                        -- lower bound of the interval_level (80 %) interval, same units
    upper             DOUBLE,                        -- upper bound; both NULL where value is NULL or the run has no bounds
    congestion_index  DOUBLE,                        -- docs/congestion.md; NULL only where value is NULL
    congestion_level  VARCHAR CHECK (congestion_level IN ('free', 'moderate', 'heavy', 'severe')),
    has_data          BOOLEAN     NOT NULL CHECK (has_data),
    PRIMARY KEY (run_id, channel, cell_id, horizon),
    CHECK ((lower IS NULL) = (upper IS NULL)),
    CHECK (lower IS NULL OR (value IS NOT NULL AND lower <= upper)),
    CHECK ((congestion_index IS NULL) = (congestion_level IS NULL))
);

-- cells.parquet: EVERY grid cell of the city for this run, with its coverage.
CREATE TABLE IF NOT EXISTS layout.cells (
    run_id        VARCHAR NOT NULL,
    city          VARCHAR NOT NULL,
    cell_id       INTEGER NOT NULL,
    "row"         INTEGER NOT NULL,                  -- grid row, 0 = southern edge
    col           INTEGER NOT NULL,                  -- grid column, 0 = western edge
    centroid_lon  DOUBLE  NOT NULL,                  -- WGS84
    centroid_lat  DOUBLE  NOT NULL,
    polygon_wkt   VARCHAR NOT NULL,                  -- cell outline, WGS84 WKT
    has_data      BOOLEAN NOT NULL,                  -- the model had data for at least one channel of the cell
    -- share of the input window's bins in which the cell observed any channel (0..1); when the
    -- caller gives only per-channel coverage, the largest per-channel share (a lower bound of it,
    -- exact for single-channel cities and for channels that share their sources). NULL: not known.
    coverage      DOUBLE CHECK (coverage BETWEEN 0 AND 1),
    n_channels_with_data SMALLINT NOT NULL,
    PRIMARY KEY (run_id, cell_id)
);

-- cell_channels.parquet: every (cell, channel) of the grid for this run: does the forecast
-- have data for it, the share of window bins it was observed in, and its congestion reference.
CREATE TABLE IF NOT EXISTS layout.cell_channels (
    run_id     VARCHAR NOT NULL,
    city       VARCHAR NOT NULL,
    cell_id    INTEGER NOT NULL,
    channel    VARCHAR NOT NULL,
    has_data   BOOLEAN NOT NULL,                     -- TRUE: its rows are in forecasts
    coverage   DOUBLE CHECK (coverage BETWEEN 0 AND 1),  -- share of input-window bins observed; NULL: not known
    reference  DOUBLE,                               -- free-flow speed (p85) or p95 volume; NULL without observations
    PRIMARY KEY (run_id, cell_id, channel)
);
