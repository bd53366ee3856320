-- 005: verification of published runs (traffic.verify; docs/publishing.md "Verification").
-- Like the run files, these tables stay EMPTY: they are the contract of the per-run skill files
--   <store>/skill/city=<city>/run_id=<run_id>/v-<version>/{forecast_skill,cell_skill}.parquet
-- written by traffic.publish.duckdb_publish.write_skill_version (city and run_id are the hive keys
-- of the folder, not columns inside the files). A target counts where the run published a value
-- AND the raster observed it; the sums let views pool days, channels and runs exactly.
-- The reference is the seasonal average fitted on the run's own input window (data up to its origin).

-- forecast_skill.parquet: one row per (channel, horizon group) of a verified run.
CREATE TABLE IF NOT EXISTS layout.forecast_skill (
    run_id          VARCHAR     NOT NULL,
    city            VARCHAR     NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL,
    target_date     DATE        NOT NULL,            -- local date (run's timezone) of the first target bin
    kind            VARCHAR     NOT NULL,            -- forecast_runs.kind: nightly, refresh, replay
    model_kind      VARCHAR     NOT NULL,            -- 'model' or the baseline that served
    model_version   VARCHAR     NOT NULL,
    mlflow_run_id   VARCHAR,                         -- the MLflow run that served (live.* metrics go there)
    model_spec      VARCHAR,                         -- forecast_runs.model_spec (JSON) or NULL
    channel         VARCHAR     NOT NULL,
    horizon_group   VARCHAR     NOT NULL,            -- 'h01', 'h02-03', ... (traffic.forecast.horizons.group_tag)
    first_horizon   SMALLINT    NOT NULL CHECK (first_horizon >= 1),
    last_horizon    SMALLINT    NOT NULL CHECK (last_horizon >= first_horizon),
    n               BIGINT      NOT NULL CHECK (n >= 0),   -- targets scored
    mae             DOUBLE,
    rmse            DOUBLE,
    bias            DOUBLE,                          -- mean(forecast - observed)
    coverage        DOUBLE CHECK (coverage BETWEEN 0 AND 1),        -- share inside the 80 % bounds
    level_hit_rate  DOUBLE CHECK (level_hit_rate BETWEEN 0 AND 1),  -- same congestion level as observed
    ref_mae         DOUBLE,
    ref_rmse        DOUBLE,
    ref_bias        DOUBLE,
    skill           DOUBLE,                          -- 1 - rmse / ref_rmse
    sum_abs_err     DOUBLE      NOT NULL,
    sum_sq_err      DOUBLE      NOT NULL,
    sum_err         DOUBLE      NOT NULL,
    n_interval      BIGINT      NOT NULL CHECK (n_interval BETWEEN 0 AND n),
    n_covered       BIGINT      NOT NULL CHECK (n_covered BETWEEN 0 AND n_interval),
    n_level         BIGINT      NOT NULL CHECK (n_level BETWEEN 0 AND n),
    n_level_hit     BIGINT      NOT NULL CHECK (n_level_hit BETWEEN 0 AND n_level),
    ref_sum_abs_err DOUBLE      NOT NULL,
    ref_sum_sq_err  DOUBLE      NOT NULL,
    ref_sum_err     DOUBLE      NOT NULL,
    reference_kind  VARCHAR     NOT NULL,            -- 'seasonal_average'
    grid_digest     VARCHAR     NOT NULL,            -- digest of the run's grid (cells) it was scored on
    PRIMARY KEY (run_id, channel, horizon_group)
);

-- cell_skill.parquet: one row per (channel, cell) of a verified run, over all its horizons.
CREATE TABLE IF NOT EXISTS layout.cell_skill (
    run_id          VARCHAR     NOT NULL,
    city            VARCHAR     NOT NULL,
    cell_id         INTEGER     NOT NULL,
    channel         VARCHAR     NOT NULL,
    n               BIGINT      NOT NULL CHECK (n >= 0),
    mae             DOUBLE,
    rmse            DOUBLE,
    bias            DOUBLE,
    coverage        DOUBLE CHECK (coverage BETWEEN 0 AND 1),
    level_hit_rate  DOUBLE CHECK (level_hit_rate BETWEEN 0 AND 1),
    ref_mae         DOUBLE,
    ref_rmse        DOUBLE,
    ref_bias        DOUBLE,
    skill           DOUBLE,
    sum_abs_err     DOUBLE      NOT NULL,
    sum_sq_err      DOUBLE      NOT NULL,
    sum_err         DOUBLE      NOT NULL,
    n_interval      BIGINT      NOT NULL CHECK (n_interval BETWEEN 0 AND n),
    n_covered       BIGINT      NOT NULL CHECK (n_covered BETWEEN 0 AND n_interval),
    n_level         BIGINT      NOT NULL CHECK (n_level BETWEEN 0 AND n),
    n_level_hit     BIGINT      NOT NULL CHECK (n_level_hit BETWEEN 0 AND n_level),
    ref_sum_abs_err DOUBLE      NOT NULL,
    ref_sum_sq_err  DOUBLE      NOT NULL,
    ref_sum_err     DOUBLE      NOT NULL,
    PRIMARY KEY (run_id, channel, cell_id)
);
