"""The REST API (and OPTIMADE, and the portal's pages) over a lake: ``create_app(settings)``."""
from mliplake.server.app import create_app

__all__ = ["create_app"]
