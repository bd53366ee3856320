-- "Where will it jam in the next N hours?" for one city, from its newest forecast run.
--
-- Parameters (always bound, never formatted into the text):
--   $city   city name
--   $hours  window length in hours (may be fractional)
--   $limit  maximum number of cells returned
--   $now    start of the window (TIMESTAMPTZ); NULL = the run's issued_at, i.e. "now" as the
--           forecast saw it (the shipped data are historical, so wall-clock now would be empty)
--   $at     which run (TIMESTAMPTZ): the newest issued at or before it; NULL = the newest run
--
-- One row per cell: the cell's worst (time, channel) in [now, now + hours) at level 'heavy' or
-- worse, with how many (time, channel) slots of the window are heavy or worse. Cells without
-- data never qualify. Worst cells first.
WITH run AS (
    SELECT run_id, issued_at
    FROM forecast_runs
    WHERE city = $city AND ($at IS NULL OR issued_at <= CAST($at AS TIMESTAMPTZ))
    ORDER BY issued_at DESC, published_at DESC
    LIMIT 1
),
win AS (
    SELECT run_id, issued_at, coalesce(CAST($now AS TIMESTAMPTZ), issued_at) AS t0
    FROM run
),
jams AS (
    SELECT
        f.city, f.run_id, w.issued_at, f.cell_id, f.target_time, f.horizon, f.channel, f.value,
        f.congestion_index, f.congestion_level,
        count(*) OVER (PARTITION BY f.cell_id) AS heavy_slots,
        row_number() OVER (
            PARTITION BY f.cell_id ORDER BY f.congestion_index DESC, f.target_time, f.channel
        ) AS rank_in_cell
    FROM forecasts AS f
    JOIN win AS w ON f.run_id = w.run_id
    WHERE f.has_data
      AND f.congestion_level IN ('heavy', 'severe')
      AND f.target_time >= w.t0
      AND f.target_time < w.t0 + to_microseconds(CAST(round($hours * 3600e6) AS BIGINT))
)
SELECT
    j.city, j.run_id, j.issued_at, j.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat,
    j.target_time, j.horizon, j.channel, j.value, j.congestion_index, j.congestion_level, j.heavy_slots
FROM jams AS j
LEFT JOIN cells AS c ON c.city = j.city AND c.cell_id = j.cell_id
WHERE j.rank_in_cell = 1
ORDER BY j.congestion_index DESC, j.target_time, j.cell_id
LIMIT $limit
