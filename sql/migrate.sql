-- Bookkeeping of the numbered layout migrations (sql/migrations/NNN_<name>.sql), used by
-- traffic.publish.migrations.migrate. Values are bound parameters.

-- name: layout_tables
SELECT table_name FROM duckdb_tables() WHERE schema_name = 'layout' ORDER BY ALL;

-- name: create_version_table
CREATE SCHEMA IF NOT EXISTS layout;
CREATE TABLE IF NOT EXISTS layout.schema_version (
    version     INTEGER     PRIMARY KEY,             -- NNN of sql/migrations/NNN_<name>.sql
    name        VARCHAR     NOT NULL,                -- the file name
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name FROM layout.schema_version ORDER BY version;

-- name: record
INSERT INTO layout.schema_version (version, name) VALUES ($version, $name);

-- name: layout_columns
-- Columns of the layout tables, in table order: what a migration left (compared on adoption).
SELECT table_name, column_name, data_type, is_nullable
FROM duckdb_columns()
WHERE schema_name = 'layout' AND table_name <> 'schema_version'
ORDER BY table_name, column_index;
