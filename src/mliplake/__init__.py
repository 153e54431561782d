"""mliplake: a lakehouse for machine-learnt interatomic potentials."""
from __future__ import annotations

__version__ = "0.1.0"

from .lake import Lake  # noqa: E402
from .manifest import Manifest, ManifestError, load_manifest  # noqa: E402

__all__ = ["Lake", "Manifest", "ManifestError", "load_manifest", "__version__"]
