-- Forecast store read by analysts (DuckDB). Applied by traffic.publish.duckdb_publish.init_db;
-- every statement is idempotent so the file can be applied any number of times.
--
-- One run = one city's forecast issued at one time. run_id is derived from (city, issued_at),
-- so re-publishing the same forecast replaces it (see publish.sql). All times are UTC instants.

CREATE TABLE IF NOT EXISTS forecast_runs (
    run_id         VARCHAR     PRIMARY KEY,          -- '<city>_<issued_at as YYYYMMDDTHHMMSSZ>'
    city           VARCHAR     NOT NULL,
    model_name     VARCHAR     NOT NULL,             -- MLflow registered model name
    model_version  VARCHAR     NOT NULL,             -- MLflow model version (or a baseline tag)
    mlflow_run_id  VARCHAR,                          -- MLflow run that trained the model
    issued_at      TIMESTAMPTZ NOT NULL,             -- the forecast's "now"; targets start at or after it
    data_start     TIMESTAMPTZ,                      -- first bin of the input window
    data_end       TIMESTAMPTZ,                      -- last bin of the input window
    horizon_steps  INTEGER     NOT NULL CHECK (horizon_steps >= 1),
    bin_seconds    INTEGER     NOT NULL CHECK (bin_seconds > 0),
    published_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (city, issued_at)
);

CREATE TABLE IF NOT EXISTS forecasts (
    run_id            VARCHAR     NOT NULL,
    city              VARCHAR     NOT NULL,
    cell_id           INTEGER     NOT NULL,
    target_time       TIMESTAMPTZ NOT NULL,          -- start of the forecast bin
    horizon           SMALLINT    NOT NULL CHECK (horizon >= 1),   -- 1 = first bin ahead
    channel           VARCHAR     NOT NULL,          -- '<feed>.<channel>', e.g. 'metr.speed_kmh'
    value             DOUBLE,                        -- forecast in original units (NULL: model gave none)
    congestion_index  DOUBLE,                        -- docs/congestion.md; NULL without data
    congestion_level  VARCHAR CHECK (congestion_level IN ('free', 'moderate', 'heavy', 'severe')),
    has_data          BOOLEAN     NOT NULL,          -- the cell had observations of this channel
    PRIMARY KEY (run_id, channel, cell_id, horizon),
    -- a cell without data never carries a level, so it can never show up as a hotspot
    CHECK (has_data OR (congestion_index IS NULL AND congestion_level IS NULL))
);

CREATE TABLE IF NOT EXISTS cells (
    city          VARCHAR NOT NULL,
    cell_id       INTEGER NOT NULL,
    "row"         INTEGER NOT NULL,                  -- grid row, 0 = southern edge
    col           INTEGER NOT NULL,                  -- grid column, 0 = western edge
    centroid_lon  DOUBLE  NOT NULL,                  -- WGS84
    centroid_lat  DOUBLE  NOT NULL,
    polygon_wkt   VARCHAR NOT NULL,                  -- cell outline, WGS84 WKT
    PRIMARY KEY (city, cell_id)
);
