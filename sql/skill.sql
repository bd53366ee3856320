-- Named statements of the verification (traffic.verify): reads of the catalog's skill relations.
-- The pooled figures come from the catalog's table macros skill_days / skill_groups
-- (sql/views.sql), the one place they are computed and rounded. Values are bound parameters.

-- name: days
SELECT * FROM skill_daily_rows
WHERE city = $city AND channel = $channel AND target_date BETWEEN $first_day AND $last_day
ORDER BY target_date;

-- name: groups
SELECT * FROM skill_groups($city, $first_day, $last_day, $served_by)
WHERE ($channel IS NULL OR channel = $channel)
ORDER BY channel = 'all' DESC, channel, first_horizon;

-- name: newest_day
SELECT max(target_date) FROM forecast_skill
WHERE city = $city AND kind IN ('nightly', 'replay') AND ($served_by IS NULL OR mlflow_run_id = $served_by);

-- name: serving_runs
-- The MLflow runs that served day-ahead forecasts verified for target days first_day .. last_day,
-- with the newest such day, what served (model_kind) and its spec.
SELECT
    mlflow_run_id, max(target_date) AS last_day, count(DISTINCT target_date) AS days,
    string_agg(DISTINCT model_kind, ',' ORDER BY model_kind) AS model_kind,
    max(model_spec) AS model_spec
FROM forecast_skill
WHERE city = $city AND kind IN ('nightly', 'replay') AND mlflow_run_id IS NOT NULL
  AND ($first_day IS NULL OR target_date >= $first_day) AND ($last_day IS NULL OR target_date <= $last_day)
GROUP BY mlflow_run_id
ORDER BY last_day, mlflow_run_id;

-- name: channels
SELECT DISTINCT channel FROM forecast_skill WHERE city = $city ORDER BY channel;
