"""An echo function to follow the Event Gateway tutorial with, on one machine.

It behaves like the seed's echo cloud function and echo container: it reads the Event Gateway's
event envelope, logs `Handling HTTP event <eventID>`, and answers
`{"statusCode": 200, "headers": {"Compute-Type": ...}, "body": <the HTTP event's body>}`.

    python examples/echo/echo.py --port 8080 --compute-type function
    python examples/echo/echo.py --port 8081 --compute-type container

Standard library only, so it runs with any Python 3.11+.
"""

import argparse
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("echo")


def echo_reply(envelope: dict[str, object], compute_type: str) -> dict[str, object]:
    """The HTTP response object for one event: its body echoed, Compute-Type set."""
    data = envelope.get("data")
    body = data.get("body", "") if isinstance(data, dict) else data
    if not isinstance(body, str):
        body = json.dumps(body)
    return {"statusCode": 200, "headers": {"Compute-Type": compute_type}, "body": body}


def make_handler(compute_type: str) -> type[BaseHTTPRequestHandler]:
    class EchoHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                envelope = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._answer(400, {"error": "the request body is not JSON"})
                return
            log.info("Handling HTTP event %s", envelope.get("eventID", "(no eventID)"))
            self._answer(200, echo_reply(envelope, compute_type))

        def _answer(self, status: int, payload: dict[str, object]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Request lines are noise next to the per-event log line."""

    return EchoHandler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--compute-type", default="function", choices=["function", "container"])
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%Y/%m/%d %H:%M:%S", level="INFO")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.compute_type))
    log.info("Starting HTTP server on %s:%d...", args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
