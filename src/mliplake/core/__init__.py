"""Core: the data model and its pure rules (schema, units, chemistry, hashing, manifests). No I/O, no other layer."""
