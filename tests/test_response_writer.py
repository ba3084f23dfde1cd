"""The response writer's remembered header lines: the same answers, checked as strictly, the
second time as the first (over real sockets, with the data plane test helpers)."""

import pytest

from eventgate.dataplane.response_writer import HeaderLines, InvalidResponse, Unusual
from eventgate.dataplane.types import Handler, Headers, Request, Response
from tests.dataplane_helpers import get, raw_client, serving


def answering(headers: Headers, body: bytes = b"body") -> Handler:
    async def handler(request: Request) -> Response:
        return Response(200, list(headers), body)

    return handler


@pytest.mark.parametrize("times", [1, 3])
async def test_header_lines_are_written_as_given_every_time(times: int) -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"x-twice", b"1"), (b"x-twice", b"2")]
    async with serving(answering(headers)) as server, raw_client(server.port) as client:
        for _ in range(times):
            await client.send(get("/"))
            response = await client.response()
            assert response.header(b"content-type") == b"text/plain"
            assert response.all(b"x-twice") == [b"1", b"2"]
            assert response.all(b"content-length") == [b"4"]
            assert response.body == b"body"


async def test_the_servers_own_headers_replace_the_handlers_each_time() -> None:
    headers = [(b"Date", b"yesterday"), (b"Content-Length", b"99"), (b"x-kept", b"yes")]
    async with serving(answering(headers)) as server, raw_client(server.port) as client:
        for _ in range(2):
            await client.send(get("/"))
            response = await client.response()
            assert response.all(b"content-length") == [b"4"]
            assert response.header(b"date") != b"yesterday"
            assert response.header(b"x-kept") == b"yes"


@pytest.mark.parametrize(
    "header",
    [(b"x-evil", b"a\nset-cookie: b"), (b"x-evil\nset-cookie", b"b"), (b"content-length", b"4x")],
)
async def test_a_bad_header_is_refused_every_time(header: tuple[bytes, bytes]) -> None:
    async with serving(answering([header])) as server, raw_client(server.port) as client:
        for _ in range(2):  # never remembered as good
            await client.send(get("/"))
            assert (await client.response()).status == 500


async def test_a_connection_close_from_the_handler_closes_after_the_answer() -> None:
    headers = [(b"Connection", b"close")]
    async with serving(answering(headers)) as server, raw_client(server.port) as client:
        await client.send(get("/"))
        response = await client.response()
        assert response.header(b"connection") == b"close"
        assert await client.closed()


async def test_headers_that_are_not_bytes_take_the_general_path() -> None:
    headers = [(b"x-buffer", bytearray(b"value"))]  # unhashable: cannot be remembered
    handler = answering(headers)  # type: ignore[arg-type]
    async with serving(handler) as server, raw_client(server.port) as client:
        await client.send(get("/"))
        assert (await client.response()).header(b"x-buffer") == b"value"


def test_header_lines_start_over_when_full() -> None:
    lines = HeaderLines(frozenset((b"date",)))
    for index in range(5000):
        assert lines.line((b"x-id", b"%d" % index)) == b"x-id: %d\r\n" % index
    assert len(lines.known) <= 4096
    assert lines.line((b"Date", b"now")) == b""
    with pytest.raises(InvalidResponse):
        lines.line((b"x", b"a\nb"))
    with pytest.raises(Unusual):
        HeaderLines(frozenset((b"connection",))).line((b"Connection", b"close"))
