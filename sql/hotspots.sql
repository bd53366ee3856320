-- "Where will it jam in the next N hours?" Used by traffic.publish.duckdb_publish.find_hotspots
-- (the CLI's `traffic hotspots`). Parameters are always bound, never formatted into the text.

-- name: city_info
-- The city's runs: how many, the zone of the newest (for naive local times), and the default time:
-- now() when some run covers it, else the start of the city's newest run (issued_at, then
-- published_at). The shipped data are historical: wall-clock now covers none of their runs.
SELECT
    count(*) AS runs,
    arg_max(timezone, struct_pack(i := issued_at, p := published_at)) AS timezone,
    CASE
        WHEN count(*) FILTER (WHERE target_start <= now() AND now() < target_end) > 0 THEN now()
        ELSE arg_max(target_start, struct_pack(i := issued_at, p := published_at))
    END AS default_at
FROM forecast_runs
WHERE city = $city;

-- name: pick_run
-- The run to answer from: the newest (issued_at, then published_at) run of $city that covers $at,
-- i.e. target_start <= $at < target_end.
SELECT
    run_id, model_name, model_version, model_kind, kind, issued_at, published_at,
    target_start, target_end, bin_seconds, timezone, channels, interval_level, folder
FROM forecast_runs
WHERE city = $city AND target_start <= CAST($at AS TIMESTAMPTZ) AND CAST($at AS TIMESTAMPTZ) < target_end
ORDER BY issued_at DESC, published_at DESC
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
-- One row per cell: its worst (time, channel) in the window with {index} >= $min_index (the
-- lower edge of the lowest level asked for, docs/congestion.md): highest index, then earliest time;
-- with how many (time, channel) slots of the window reach it (slots) and how many reach the two
-- worst levels (heavy_slots: heavy or severe; busy or peak). A bin [target_time, target_time + bin)
-- is in the window [$start, $end) when they overlap. Worst cells first. $forecasts and $cells are
-- the run's own files (forecast_runs.folder), so nothing but that run is opened (the forecasts /
-- run_cells views give the same rows). {index} / {level} are replaced by the publisher with one of
-- its allow-listed column pairs: congestion_index / congestion_level (speeds: the default ranking)
-- or volume_index / volume_level (a volume channel asked for by name).
WITH per_cell AS (
    SELECT
        f.cell_id,
        count(*) AS slots,
        count(*) FILTER (WHERE f.{index} >= $heavy_index) AS heavy_slots,
        arg_max(
            struct_pack(
                city := f.city, run_id := f.run_id, target_time := f.target_time, horizon := f.horizon,
                channel := f.channel, value := f.value, lower := f.lower, upper := f.upper,
                {index} := f.{index}, {level} := f.{level}
            ),
            struct_pack(i := f.{index}, t := -epoch_us(f.target_time))
        ) AS w
    FROM read_parquet($forecasts, hive_partitioning = true, hive_types = {'city': VARCHAR, 'run_id': VARCHAR}) AS f
    WHERE f.{index} >= $min_index
      AND ($channel IS NULL OR f.channel = $channel)
      AND f.target_time < CAST($end AS TIMESTAMPTZ)
      AND f.target_time > CAST($start AS TIMESTAMPTZ) - to_seconds($bin_seconds)
    GROUP BY f.cell_id
)
SELECT
    p.w.city, p.w.run_id, p.cell_id, c."row", c.col, c.centroid_lon, c.centroid_lat, p.w.target_time,
    p.w.horizon, p.w.channel, p.w.value, p.w.lower, p.w.upper, p.w.{index}, p.w.{level},
    p.slots, p.heavy_slots
FROM per_cell AS p
LEFT JOIN read_parquet($cells) AS c ON c.cell_id = p.cell_id
ORDER BY p.w.{index} DESC, p.w.target_time, p.cell_id
LIMIT $limit;
