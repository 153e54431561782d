"""``uvicorn mliplake.server.asgi:app``: the app built from the environment's settings."""
from mliplake.server.app import create_app
from mliplake.settings import Settings

app = create_app(Settings())
