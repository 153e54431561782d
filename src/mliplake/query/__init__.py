"""Query: the read side over DuckDB. Views per access scope, filter search and count, untrusted SQL in a
sandbox, exports, statistics and ASE ``Atoms``."""
