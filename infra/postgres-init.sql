-- The database of the lake's DuckLake catalog (MLIPLAKE_CATALOG), beside Dagster's.
CREATE DATABASE mliplake;
