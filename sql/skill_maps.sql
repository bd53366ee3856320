-- Named statements used by traffic.verify.maps (error maps of verified runs). Each block starts
-- with "-- name: <name>". Values are bound parameters ($name); nothing is formatted into the text.
-- Only the catalog's relations are read: forecast_runs, run_cells and cell_skill.

-- name: verified_runs
-- The city's verified runs, newest first: the first row is the default run of an error map.
SELECT r.run_id, r.city, r.issued_at, r.model_kind, r.model_version, r.kind
FROM forecast_runs AS r
WHERE r.city = $city AND r.run_id IN (SELECT DISTINCT run_id FROM cell_skill WHERE city = $city)
ORDER BY r.issued_at DESC, r.run_id DESC;

-- name: cell_errors
-- Every grid cell of one run with, per channel, what verification measured there (NULL: not scored).
SELECT c.cell_id, c.polygon_wkt, s.channel, s.n, s.rmse, s.bias, s.skill
FROM run_cells AS c
LEFT JOIN cell_skill AS s ON s.run_id = c.run_id AND s.cell_id = c.cell_id
WHERE c.run_id = $run_id
ORDER BY c.cell_id, s.channel;
