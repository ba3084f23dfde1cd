"""The config API as the CLI sees it: JSON in and out, and errors that say what to do next.

httpx is imported when a command first talks to the API, so `eventgate --help` and `eventgate
serve` do not pay for it.
"""

from typing import TYPE_CHECKING, Any

import click

from eventgate.client import ClientOptions

if TYPE_CHECKING:
    import httpx


class ClientError(click.ClickException):
    """A failure the CLI reports as `Error: ...` with exit status 1."""


class ConfigApi:
    """`/v1/spaces/<space>/...` of one node."""

    def __init__(self, options: ClientOptions) -> None:
        self.base = options.config_url.rstrip("/")
        self.space = options.space
        import httpx

        self._client = httpx.Client(base_url=self.base, timeout=httpx.Timeout(60.0, connect=5.0))

    def __enter__(self) -> "ConfigApi":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        hints: dict[int, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """Send one request to `/v1/spaces/<space>/<path>`; returns (status, JSON or None).

        Statuses in `ok` are returned even when they are errors; any other error becomes a
        ClientError with the server's message and, from `hints`, what to do about it."""
        import httpx

        url = f"/v1/spaces/{self.space}/{path.lstrip('/')}"
        try:
            response = self._client.request(
                method,
                url,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.ConnectError as error:
            raise ClientError(
                f"cannot reach the eventgate config API at {self.base} ({error}). Start a node "
                "with `eventgate serve`, or point the CLI at one with --config-url URL (or "
                "EVENTGATE_CONFIG_URL)."
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the config API at {self.base} did not answer {method} {url} in time; "
                "try again, or check the node's log."
            ) from None
        except httpx.HTTPError as error:
            raise ClientError(f"{method} {self.base}{url} failed: {error}") from None
        data = _json(response)
        if response.status_code < 400 or response.status_code in ok:
            return response.status_code, data
        message = _message(data) or response.text.strip() or response.reason_phrase
        hint = (hints or {}).get(response.status_code)
        if response.status_code == 503 and hint is None:
            hint = "Is the node starting or stopping? Check `eventgate serve`'s log."
        text = f"{message} (HTTP {response.status_code})"
        raise ClientError(f"{text}\n{hint}" if hint else text)

    def get(self, path: str, **options: Any) -> Any:
        return self.request("GET", path, **options)[1]

    def post(self, path: str, body: Any, **options: Any) -> Any:
        return self.request("POST", path, body=body, **options)[1]

    def put(self, path: str, body: Any, **options: Any) -> Any:
        return self.request("PUT", path, body=body, **options)[1]

    def delete(self, path: str, **options: Any) -> None:
        self.request("DELETE", path, **options)


def _json(response: "httpx.Response") -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _message(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("errors"), list) and data["errors"]:
        return "; ".join(str(error.get("message", error)) for error in data["errors"])
    return None
