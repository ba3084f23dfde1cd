"""What calling an upstream can fail with; the gateway maps each to a status (502 or 504)."""


class UpstreamError(Exception):
    """Calling an upstream failed."""


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the connection closed before a response began (502)."""


class UpstreamTimeout(UpstreamError):
    """No (complete) response in time (504)."""


class UpstreamProtocolError(UpstreamError):
    """The response was malformed, cut short, or larger than allowed (502)."""


class ClosedBeforeResponse(UpstreamConnectError):
    """The connection closed before any byte of the response: safe to retry a replayable
    request once, if the connection had been idle in the pool."""
