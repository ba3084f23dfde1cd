"""The config API: a FastAPI app over the config store, compatible with the Event Gateway's."""

from eventgate.api.app import create_config_app

__all__ = ["create_config_app"]
