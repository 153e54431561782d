"""mliplake: a lakehouse for machine-learnt interatomic potentials."""
from __future__ import annotations

__version__ = "0.1.0"

from mliplake.core.manifest import Manifest, ManifestError, load_manifest  # noqa: E402
from mliplake.lake import Lake  # noqa: E402


def __getattr__(name: str):  # noqa: ANN202 - Client (and httpx) load only when asked for
    if name in ("Client", "APIError"):
        from mliplake import client

        return getattr(client, name)
    raise AttributeError(f"module 'mliplake' has no attribute {name!r}")


def load_calculator(model_id: str, lake: Lake | None = None, device: str = "cpu"):  # noqa: ANN201
    """A registered model as an ASE calculator, in one call (imports torch and mace only now)."""
    from mliplake.ml.models import load_calculator as load

    return load(model_id, lake, device)


__all__ = ["APIError", "Client", "Lake", "Manifest", "ManifestError", "load_calculator", "load_manifest", "__version__"]
