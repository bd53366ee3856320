-- 004: what served a run, and replayed runs.
-- * model_spec: the candidate that made the forecast and its fitted artefacts, as the forecast stage
--   wrote it into meta.json (a JSON text, at least {"candidate": "<model|base|base_head|gbm|...>"}).
--   NULL for runs published before it was recorded (their run.parquet files have no such column and
--   read as NULL: sql/publish.sql "source_runs").
-- * kind 'replay': a day-ahead run issued after the fact for a past day D with data up to D only
--   (traffic.pipeline.replay_days), so that it can be verified against D+1. DuckDB cannot change a
--   CHECK constraint in place: the (always empty) layout table is rebuilt with the new one.
CREATE TABLE layout.forecast_runs__004 (
    run_id          VARCHAR     NOT NULL,
    city            VARCHAR     NOT NULL,
    model_name      VARCHAR     NOT NULL,
    model_version   VARCHAR     NOT NULL,
    model_kind      VARCHAR     NOT NULL,
    kind            VARCHAR     NOT NULL CHECK (kind IN ('nightly', 'refresh', 'replay')),
    mlflow_run_id   VARCHAR,
    issued_at       TIMESTAMPTZ NOT NULL,
    data_start      TIMESTAMPTZ,
    data_end        TIMESTAMPTZ,
    horizon_steps   INTEGER     NOT NULL CHECK (horizon_steps >= 1),
    bin_seconds     INTEGER     NOT NULL CHECK (bin_seconds > 0),
    target_start    TIMESTAMPTZ NOT NULL,
    target_end      TIMESTAMPTZ NOT NULL,
    timezone        VARCHAR     NOT NULL,
    channels        VARCHAR[]   NOT NULL,
    interval_level  DOUBLE CHECK (interval_level > 0 AND interval_level < 1),
    interval_method VARCHAR,
    n_rows          BIGINT      NOT NULL,
    n_cells         INTEGER     NOT NULL,
    n_cells_with_data INTEGER   NOT NULL,
    published_at    TIMESTAMPTZ NOT NULL,
    version         VARCHAR     NOT NULL,
    code_version    VARCHAR,
    model_spec      VARCHAR,                         -- JSON: {"candidate": ..., ...}; NULL before it was recorded
    CHECK (target_start >= issued_at AND target_end > target_start)
);
INSERT INTO layout.forecast_runs__004 BY NAME SELECT * FROM layout.forecast_runs;
DROP TABLE layout.forecast_runs;
ALTER TABLE layout.forecast_runs__004 RENAME TO forecast_runs;
