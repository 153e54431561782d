"""Catalogue: dataset cards, their quality score, and dataset search."""
