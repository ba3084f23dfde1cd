"""eventgate: an event gateway and function runtime."""

__version__ = "0.1.0"
