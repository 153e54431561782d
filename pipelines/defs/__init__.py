"""One folder per domain: ingestion (inbox, raw deposits, configurations) and catalogue."""
