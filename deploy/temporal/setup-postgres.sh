#!/bin/sh
# Runs in temporalio/admin-tools before the server starts: creates the two databases if missing
# and moves both schemas to the versions this image ships (update-schema is idempotent).
set -eu
sql() { temporal-sql-tool --plugin "$DB" --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --pw "$POSTGRES_PWD" "$@"; }
until nc -z "$POSTGRES_SEEDS" "$DB_PORT"; do echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$DB_PORT"; sleep 1; done
for pair in temporal:temporal visibility:temporal_visibility; do
  dir="${pair%%:*}"
  db="${pair#*:}"
  # `create` fails when the database exists (a second `up`); that is not an error here.
  sql --db "$db" create 2>/dev/null || echo "database $db exists"
  # setup-schema -v 0.0 only creates the version tables; it is skipped once they exist.
  sql --db "$db" setup-schema -v 0.0 2>/dev/null || echo "schema of $db already initialised"
  sql --db "$db" update-schema -d "/etc/temporal/schema/postgresql/v12/$dir/versioned"
done
echo "PostgreSQL schema ready"
