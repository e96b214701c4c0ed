#!/bin/bash
# Runs once, when the postgres container initialises an empty data volume (docker-entrypoint-initdb.d):
# creates the read-only role the dashboard service connects with.  On an existing volume, run
# deploy/postgres/dashboard_reader.sql by hand (README "Dashboard").
set -euo pipefail
psql --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader="${DASHBOARD_DB_USER:-sentistream_reader}" -v password="${DASHBOARD_DB_PASSWORD:-change-me-too}" \
    -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" -f /deploy/postgres/dashboard_reader.sql
