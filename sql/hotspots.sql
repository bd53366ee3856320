-- "Where will it jam in the next N hours?" Used by traffic.publish.duckdb_publish.find_hotspots
-- (the CLI's `traffic hotspots`). Parameters are always bound, never formatted into the text.

-- name: city_info
-- The city's runs: how many, the zone of the newest (for naive local times), and what they cover.
SELECT
    count(*) AS runs,
    arg_max(timezone, issued_at) AS timezone,
    min(target_start) AS first_start,
    max(target_end) AS last_end
FROM forecast_runs
WHERE city = $city;

-- name: pick_run
-- The run to answer from: the newest (issued_at, then published_at) run of $city that covers $at
-- (target_start <= $at < target_end). $at NULL = now() when some run covers it, else the start
-- of the city's newest run (the shipped data are historical: wall-clock now covers nothing).
WITH runs AS (
    SELECT * FROM forecast_runs WHERE city = $city
),
t AS (
    SELECT coalesce(
        CAST($at AS TIMESTAMPTZ),
        CASE
            WHEN EXISTS (SELECT 1 FROM runs WHERE target_start <= now() AND now() < target_end) THEN now()
            ELSE (SELECT target_start FROM runs ORDER BY issued_at DESC, published_at DESC LIMIT 1)
        END
    ) AS at
)
SELECT
    r.run_id, r.model_name, r.model_version, r.model_kind, r.kind, r.issued_at, r.published_at,
    r.target_start, r.target_end, r.bin_seconds, r.timezone, r.channels, r.interval_level, r.folder, t.at
FROM runs AS r, t
WHERE r.target_start <= t.at AND t.at < r.target_end
ORDER BY r.issued_at DESC, r.published_at DESC
LIMIT 1;

-- name: covered
-- What the city's runs cover, as merged [start, end) intervals (for the error of an uncovered $at).
WITH r AS (
    SELECT target_start, target_end,
           max(target_end) OVER (ORDER BY target_start ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM forecast_runs WHERE city = $city
),
g AS (
    SELECT *, sum(CASE WHEN prev_end IS NULL OR target_start > prev_end THEN 1 ELSE 0 END)
        OVER (ORDER BY target_start ROWS UNBOUNDED PRECEDING) AS grp
    FROM r
)
SELECT min(target_start) AS start, max(target_end) AS "end" FROM g GROUP BY grp ORDER BY start;

-- name: hotspots
-- One row per cell: its worst (time, channel) in the window with congestion_index >= $min_index (the
-- lower edge of the lowest level asked for, docs/congestion.md), with how many (time, channel) slots
-- of the window reach it (slots) and how many are heavy or worse (heavy_slots).
-- A bin [target_time, target_time + bin) is in the window [$start, $end) when they overlap.
-- Worst cells first. $forecasts and $cells are the run's own files (forecast_runs.folder), so
-- nothing but that run is opened (the forecasts/run_cells views would give the same rows).
WITH slots AS (
    SELECT
        f.city, f.run_id, f.cell_id, f.target_time, f.horizon, f.channel, f.value, f.lower, f.upper,
        f.congestion_index, f.congestion_level,
        count(*) OVER (PARTITION BY f.cell_id) AS slots,
        count(*) FILTER (WHERE f.congestion_level IN ('heavy', 'severe')) OVER (PARTITION BY f.cell_id) AS heavy_slots,
        row_number() OVER (
            PARTITION BY f.cell_id ORDER BY f.congestion_index DESC, f.target_time, f.channel
        ) AS rank_in_cell
    FROM read_parquet($forecasts, hive_partitioning = true, hive_types = {'city': VARCHAR, 'run_id': VARCHAR}) AS f
    WHERE f.congestion_index >= $min_index
      AND ($channel IS NULL OR f.channel = $channel)
      AND f.target_time < CAST($end AS TIMESTAMPTZ)
      AND f.target_time > CAST($start AS TIMESTAMPTZ) - to_seconds($bin_seconds)
)
SELECT
    s.city, s.run_id, s.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat, s.target_time, s.horizon,
    s.channel, s.value, s.lower, s.upper, s.congestion_index, s.congestion_level, s.slots, s.heavy_slots
FROM slots AS s
LEFT JOIN read_parquet($cells) AS c ON c.cell_id = s.cell_id
WHERE s.rank_in_cell = 1
ORDER BY s.congestion_index DESC, s.target_time, s.cell_id
LIMIT $limit;
