"""Entry point of the code location: everything under ``defs/``, plus the resources."""
import warnings

import dagster as dg

from pipelines import defs as defs_package
from pipelines.defs.resources import resources


def _load() -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # the loader is "preview"; what it loads is not
        loaded = dg.load_definitions_from_package_module(defs_package)
    return dg.Definitions.merge(loaded, dg.Definitions(resources=resources()))


defs = _load()
