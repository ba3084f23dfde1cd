"""A path tree for HTTP routes: static segments, `:param` segments and a trailing `*wildcard`.

Semantics follow the Event Gateway's `internal/pathtree`: paths split on `/` (so `/a/` and `/a`
are different routes), `:name` matches one non-empty segment, a final `*name` captures the rest
of the path (`/users/*userpath` on `/users/group1/user1` gives `userpath=group1/user1`), and a
static child beats a parameter child, which beats a wildcard. Unlike the Event Gateway, static
and parameter siblings may coexist; lookup backtracks, so `/a/:x/d` still matches `/a/b/d` when
a static `/a/b/c` exists.

Fully static routes also sit in one dict keyed by the whole path, so the common lookup is a
single dict hit; the rest costs one dict lookup per segment, whatever the number of routes.
"""

from typing import Generic, TypeVar, cast

V = TypeVar("V")
_MISSING = object()

Params = dict[str, str]


class PathConflict(ValueError):
    """A route cannot be added: it is already there or is ambiguous with one that is."""


class _Node(Generic[V]):
    __slots__ = ("has_value", "param", "param_name", "static", "value", "wildcard")

    def __init__(self) -> None:
        self.static: dict[str, _Node[V]] = {}
        self.param: _Node[V] | None = None
        self.param_name = ""
        self.wildcard: tuple[str, V] | None = None
        self.value: V | None = None
        self.has_value = False


def _segments(path: str) -> list[str]:
    return path.split("/")[1:] if path != "/" else []


class PathTree(Generic[V]):
    """Maps route patterns to values; `lookup(path)` gives the best match and its params."""

    __slots__ = ("_exact", "_root")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._exact: dict[str, V] = {}

    def add(self, pattern: str, value: V) -> None:
        """Add a route. Raises PathConflict for a duplicate, a parameter or wildcard whose name
        differs from the one already at that position, or a wildcard that is not last."""
        if not pattern.startswith("/"):
            raise PathConflict(f"path {pattern!r} must start with '/'")
        segments = _segments(pattern)
        node = self._root
        for index, segment in enumerate(segments):
            if segment.startswith("*"):
                if index != len(segments) - 1:
                    raise PathConflict(f"wildcard must be the last segment of {pattern!r}")
                self._add_wildcard(node, segment[1:], pattern, value)
                return
            if segment.startswith(":"):
                node = self._param_child(node, segment[1:], pattern)
            else:
                child = node.static.get(segment)
                if child is None:
                    child = node.static[segment] = _Node()
                node = child
        if node.has_value:
            raise PathConflict(f"route {pattern!r} is already defined")
        node.value, node.has_value = value, True
        if all(not s.startswith(":") for s in segments):
            self._exact[pattern] = value

    def lookup(self, path: str) -> tuple[V, Params] | None:
        """The value of the best route for `path` and its captured params, or None."""
        value = self._exact.get(path, _MISSING)
        if value is not _MISSING:
            return cast(V, value), {}
        params: Params = {}
        node = self._resolve(self._root, _segments(path), 0, params)
        if node is None:
            return None
        if isinstance(node, tuple):
            return node[1], params
        return cast(V, node.value), params

    def _resolve(
        self, node: _Node[V], segments: list[str], index: int, params: Params
    ) -> "_Node[V] | tuple[str, V] | None":
        """The node holding the match (or the matching wildcard), filling `params` on the way
        back up so that branches abandoned by backtracking leave nothing behind."""
        if index == len(segments):
            return node if node.has_value else None
        segment = segments[index]
        child = node.static.get(segment)
        if child is not None:
            found = self._resolve(child, segments, index + 1, params)
            if found is not None:
                return found
        if node.param is not None and segment:
            found = self._resolve(node.param, segments, index + 1, params)
            if found is not None:
                params[node.param_name] = segment
                return found
        if node.wildcard is not None:
            params[node.wildcard[0]] = "/".join(segments[index:])
            return node.wildcard
        return None

    @staticmethod
    def _param_child(node: _Node[V], name: str, pattern: str) -> _Node[V]:
        if not name:
            raise PathConflict(f"parameter without a name in {pattern!r}")
        if node.param is None:
            node.param, node.param_name = _Node(), name
        elif node.param_name != name:
            raise PathConflict(
                f"parameter :{name} in {pattern!r} conflicts with :{node.param_name} "
                "at the same position"
            )
        return node.param

    @staticmethod
    def _add_wildcard(node: _Node[V], name: str, pattern: str, value: V) -> None:
        if not name:
            raise PathConflict(f"wildcard without a name in {pattern!r}")
        if node.wildcard is not None:
            raise PathConflict(
                f"wildcard *{name} in {pattern!r} conflicts with *{node.wildcard[0]} "
                "at the same position"
            )
        node.wildcard = (name, value)
