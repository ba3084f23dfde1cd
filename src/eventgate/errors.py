"""The one JSON error shape both ports use, the Event Gateway's, and errors that map to statuses."""

import orjson


def error_body(message: str) -> bytes:
    """Serialize one error message in the Event Gateway's shape."""
    return orjson.dumps({"errors": [{"message": message}]})


class EventgateError(Exception):
    """An error that maps to an HTTP status and a message a user can act on."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(EventgateError):
    status = 404


class Conflict(EventgateError):
    status = 409


class ValidationFailed(EventgateError):
    status = 400


class Unavailable(EventgateError):
    status = 503
