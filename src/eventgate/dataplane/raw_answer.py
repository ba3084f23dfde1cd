"""Recognizing a function's usual answer in its raw bytes, for the fast lane (`passthrough.py`).

The usual answer: HTTP/1.1, a known final status, well-formed header lines, framed by one
Content-Length (or by its status: 204, 304), and no header about the connection other than
`Connection: keep-alive`. What to pass on of such a head is worked out once per distinct head
(functions repeat theirs, but for the Date, which changes once a second) and remembered.
Anything else is the connection's parser's to read (None). Header lines pass on as the general
path writes them (`normal_lines`), so the lane's answers are the general path's, byte for byte.
"""

import re

from eventgate.dataplane.response_writer import STATUS_LINES, length_line

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
LINES = rb"((?:\r\n" + _TOKEN + rb":" + _VALUE + rb")*)"
"""Header lines, each one after its CRLF (a regex group)."""
_HEAD = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: " + _VALUE + rb")?" + LINES + rb"\r\n\r\n")
"""An answer's head: status, header lines."""
_ODD = re.compile(rb"\r\n(?:transfer-encoding|keep-alive|proxy-|te|trailer|upgrade)[ \t]*:")
"""Answer headers (lower-cased) about framing or the connection that the parser must see."""
MEMO_ENTRIES = 16384
"""Distinct requests, answer heads and replies remembered (each; past that, start over):
enough for a client cycling through every path of a 10,000-route table."""
MEMO_BYTES = 1024
"""Requests, answer heads and replies up to this size are remembered (at most ~32 MiB each)."""

Answer = tuple[bytes, bytes, int, int]
"""A usual answer's head: the status line; the header lines to pass on (each ending in CRLF;
not Date or Connection) and the Content-Length line as the server writes it; the length of the
body (0 for 204 and 304, -1 for none given) and the status."""


class AnswerHeads:
    """Usual answer heads, worked out once per distinct head."""

    def __init__(self, own_server_header: bool) -> None:
        self.known: dict[bytes, Answer | None] = {}
        """`learn`'s result for each head seen (the lane looks here first)."""
        self._dropped = (b"\r\ndate:", b"\r\nconnection:", b"\r\ncontent-length:")
        """Answer headers the server writes itself (and Server, if it writes its own)."""
        if own_server_header:
            self._dropped += (b"\r\nserver:",)

    def learn(self, head: bytes) -> Answer | None:
        """What to pass on of an answer's `head` (through its blank line), or None if it is not
        the usual answer."""
        answer = None
        match = _HEAD.fullmatch(head)
        status = int(match.group(1)) if match is not None else 0
        status_line = STATUS_LINES.get(status)
        if match is not None and status_line is not None:
            lines = match.group(2)
            lowered = lines.lower()
            length = content_length(lowered)
            if length is not None and _ODD.search(lowered) is None:
                for name in self._dropped:
                    at = lowered.find(name)
                    if at < 0:
                        continue
                    end = lowered.find(b"\r\n", at + 2)
                    if end < 0:
                        end = len(lowered)
                    if (
                        name == b"\r\nconnection:"
                        and lowered[at + 13 : end].strip(b" \t") != b"keep-alive"
                    ) or lowered.find(name, end) >= 0:
                        break
                    lines = lines[:at] + lines[end:]
                    lowered = lowered[:at] + lowered[end:]
                else:
                    answer = _answer(status_line, normal_lines(lines), length, status)
        if len(head) <= MEMO_BYTES:
            if len(self.known) >= MEMO_ENTRIES:
                self.known = {}
            self.known[head] = answer
        return answer


def _answer(status_line: bytes, lines: bytes, length: int, status: int) -> Answer:
    """The Answer for a usual head's kept lines: the server's framing after them, as the
    response writer frames it (none for 204 and 304)."""
    head = lines[2:] + b"\r\n" if lines else b""
    if status == 204 or status == 304:
        return status_line, head, 0, status
    if length < 0:
        return status_line, head, -1, status
    return status_line, head + length_line(length), length, status


def normal_lines(lines: bytes) -> bytes:
    """Header lines (each after its CRLF) as the general path writes them: `name: value`,
    the name lower-cased, the value without the whitespace before it (httptools keeps what
    follows it)."""
    normal = []
    for line in lines.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        normal.append(b"\r\n%s: %s" % (name.lower(), value.lstrip(b" \t")))
    return b"".join(normal)


def content_length(lowered: bytes) -> int | None:
    """The Content-Length of a message's header lines (lower-cased): -1 for none, None for
    more than one or one that is not a number."""
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        return -1
    end = lowered.find(b"\r\n", at + 17)
    value = lowered[at + 17 : end if end >= 0 else len(lowered)].strip(b" \t")
    if not value.isdigit() or (end >= 0 and lowered.find(b"\r\ncontent-length:", end) >= 0):
        return None
    return int(value)
