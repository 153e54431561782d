"""Thin routers over the library, one per area."""
