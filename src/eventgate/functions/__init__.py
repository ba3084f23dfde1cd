"""Python functions as a service of the node: image and secret records, deployments on first
need, calls with schemas and secrets, and invocation records (see `service.py`)."""

from eventgate.functions.invocations import InvocationLog
from eventgate.functions.resources import ImageSpec, SecretSpec
from eventgate.functions.service import Deployment, PythonFunctions

__all__ = ["Deployment", "ImageSpec", "InvocationLog", "PythonFunctions", "SecretSpec"]
