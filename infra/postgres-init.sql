-- The database of the lake's DuckLake catalog (MLIPLAKE_CATALOG), beside Dagster's.
CREATE DATABASE mliplake;
-- The accounts of the REST API (MLIPLAKE_ACCOUNTS).
CREATE DATABASE mliplake_accounts;
