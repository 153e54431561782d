"""The canonical Arrow schemas of the lake: one row per labelled configuration.

Units inside the lake are fixed: eV, Å, eV/Å, eV/Å³ (ASE sign convention:
positive stress is tensile), e, μB.  ``docs/schema.md`` documents every column.
"""
from __future__ import annotations

import pyarrow as pa

HASH_VERSION = 1

#: Labels the lake knows by name; everything else is kept in ``info`` / ``arrays``.
#: name -> (per-atom?, canonical unit)
LABELS: dict[str, tuple[bool, str]] = {
    "energy": (False, "eV"),
    "forces": (True, "eV/Å"),
    "stress": (False, "eV/Å³"),
    "virial": (False, "eV"),
    "charges": (True, "e"),
    "magmoms": (True, "μB"),
    "dipole": (False, "e·Å"),
}

# Vectors and matrices are plain lists (length 3 and 9 by construction): DuckLake, the lake's
# table format, has no fixed-size arrays.
_vec3 = pa.list_(pa.float64())
_mat9 = pa.list_(pa.float64())
_json = pa.json_(pa.utf8())

CONFIGURATIONS = pa.schema(
    [
        pa.field("config_id", pa.string(), nullable=False),
        pa.field("structure_hash", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("deposit_id", pa.string(), nullable=False),
        pa.field("source_file", pa.string()),
        pa.field("frame_index", pa.int64()),
        pa.field("numbers", pa.list_(pa.uint8())),
        pa.field("positions", pa.list_(_vec3)),
        pa.field("cell", _mat9),
        pa.field("pbc", pa.list_(pa.bool_())),
        pa.field("nsites", pa.int32()),
        pa.field("nelements", pa.int32()),
        pa.field("elements", pa.list_(pa.string())),
        pa.field("elements_ratios", pa.list_(pa.float64())),
        pa.field("chemical_formula_reduced", pa.string()),
        pa.field("chemical_formula_hill", pa.string()),
        pa.field("chemical_formula_anonymous", pa.string()),
        pa.field("nperiodic_dimensions", pa.int8()),
        pa.field("element_mask_lo", pa.uint64()),
        pa.field("element_mask_hi", pa.uint64()),
        pa.field("volume", pa.float64()),
        pa.field("energy", pa.float64()),
        pa.field("energy_per_atom", pa.float64()),
        pa.field("forces", pa.list_(_vec3)),
        pa.field("max_force", pa.float64()),
        pa.field("stress", _mat9),
        pa.field("virial", _mat9),
        pa.field("charges", pa.list_(pa.float64())),
        pa.field("magmoms", pa.list_(pa.float64())),
        pa.field("dipole", _vec3),
        # label presence, stored: a filter on it reads one bit per row, not the label's values
        pa.field("has_energy", pa.bool_(), nullable=False),
        pa.field("has_forces", pa.bool_(), nullable=False),
        pa.field("has_stress", pa.bool_(), nullable=False),
        pa.field("has_virial", pa.bool_(), nullable=False),
        pa.field("info", _json),
        pa.field("arrays", _json),
        pa.field("method", _json),
        pa.field("provenance", _json),
        pa.field("hash_version", pa.int16()),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("deposit_id", pa.string(), nullable=False),
        pa.field("source_file", pa.string()),
        pa.field("frame_index", pa.int64()),  # null: the whole file was rejected
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


#: Parquet options: zstd; dictionary pages only for columns that repeat (floats do not).
PARQUET_OPTIONS = dict(
    compression="zstd",
    use_dictionary=["dataset", "deposit_id", "source_file", "method", "elements", "elements.list.element",
                    "chemical_formula_reduced", "chemical_formula_hill", "chemical_formula_anonymous"],
)
