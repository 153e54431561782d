"""Ingest: the write side. Normalising frames, deposits and their commits, parallel parsing, the inbox, uploads
over HTTP, quality checks and retraction. Reads files through :mod:`mliplake.readers`, stores through
:mod:`mliplake.storage`."""
