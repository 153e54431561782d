"""The mliplake Dagster code location: thin assets, sensors and checks over the ``mliplake`` library."""
