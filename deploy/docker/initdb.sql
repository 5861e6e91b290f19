-- The compose PostgreSQL holds two databases: dagster (Dagster's storage, POSTGRES_DB) and the
-- business database. In production both are managed PostgreSQL servers or databases.
CREATE DATABASE bulkchange;
