#!/usr/bin/env bash
# Runs once, when the postgres volume is empty: the MLflow backend database and its role,
# next to the Airflow metadata database created from POSTGRES_DB/POSTGRES_USER.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v mlflow_password="$MLFLOW_DB_PASSWORD" <<-'EOSQL'
	CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
	CREATE DATABASE mlflow OWNER mlflow;
EOSQL
