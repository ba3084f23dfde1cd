"""The path tree: static, `:param` and `*wildcard` routes, priorities, conflicts and scale."""

import time

import pytest

from eventgate.routing.pathtree import PathConflict, PathTree


def tree_of(*patterns: str) -> PathTree[str]:
    tree: PathTree[str] = PathTree()
    for pattern in patterns:
        tree.add(pattern, pattern)
    return tree


def test_root_and_static_routes() -> None:
    tree = tree_of("/", "/a", "/b", "/a/b", "/d/e/f")
    for path in ("/", "/a", "/b", "/a/b", "/d/e/f"):
        assert tree.lookup(path) == (path, {})
    assert tree.lookup("/c") is None
    assert tree.lookup("/d/e") is None
    assert tree_of("/a").lookup("/") is None


def test_trailing_slash_is_a_different_route() -> None:
    tree = tree_of("/a/")
    assert tree.lookup("/a") is None
    assert tree.lookup("/a/") == ("/a/", {})


def test_params() -> None:
    tree = tree_of("/:name", "/:name/:id", "/users/:id/posts")
    assert tree.lookup("/foo") == ("/:name", {"name": "foo"})
    assert tree.lookup("/foo/1") == ("/:name/:id", {"name": "foo", "id": "1"})
    assert tree.lookup("/users/7/posts") == ("/users/:id/posts", {"id": "7"})
    assert tree.lookup("/foo/bar/baz") is None


def test_a_param_does_not_match_an_empty_segment() -> None:
    assert tree_of("/users/:id").lookup("/users/") is None


def test_wildcard_captures_the_rest() -> None:
    tree = tree_of("/users/*userpath", "/*all")
    assert tree.lookup("/users/group1/user1") == ("/users/*userpath", {"userpath": "group1/user1"})
    assert tree.lookup("/other/x") == ("/*all", {"all": "other/x"})
    assert tree.lookup("/users/") == ("/users/*userpath", {"userpath": ""})


def test_static_beats_param_beats_wildcard() -> None:
    tree = tree_of("/users/me", "/users/:id", "/users/*rest")
    assert tree.lookup("/users/me") == ("/users/me", {})
    assert tree.lookup("/users/42") == ("/users/:id", {"id": "42"})
    assert tree.lookup("/users/42/x") == ("/users/*rest", {"rest": "42/x"})


def test_lookup_backtracks_from_a_static_dead_end() -> None:
    tree = tree_of("/a/b/c", "/a/:x/d")
    assert tree.lookup("/a/b/d") == ("/a/:x/d", {"x": "b"})
    assert tree.lookup("/a/b/c") == ("/a/b/c", {})


def test_abandoned_branches_leave_no_params() -> None:
    tree = tree_of("/:a/:b/c", "/*rest")
    assert tree.lookup("/x/y/z") == ("/*rest", {"rest": "x/y/z"})


@pytest.mark.parametrize(
    ("first", "second", "path"),
    [
        ("/a", "/a", "/a"),
        ("/:foo", "/:bar", "/v"),
        ("/*foo", "/*bar", "/v/w"),
        ("/x/:id/y", "/x/:name/z", "/x/1/y"),
    ],
)
def test_conflicts_are_rejected_and_the_first_route_stays(
    first: str, second: str, path: str
) -> None:
    tree = tree_of(first)
    with pytest.raises(PathConflict):
        tree.add(second, second)
    found = tree.lookup(path)
    assert found is not None
    assert found[0] == first


@pytest.mark.parametrize("pattern", ["/*rest/more", "/:", "/*", "no-slash"])
def test_invalid_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(PathConflict):
        tree_of(pattern)


def test_lookups_cost_the_same_with_ten_thousand_routes() -> None:
    def timed(tree: PathTree[str], paths: list[str]) -> float:
        start = time.perf_counter()
        for _ in range(20):
            for path in paths:
                tree.lookup(path)
        return time.perf_counter() - start

    def build(count: int) -> PathTree[str]:
        tree: PathTree[str] = PathTree()
        for i in range(count):
            tree.add(f"/svc{i}/items/:id", str(i))
            tree.add(f"/static{i}/a/b", str(i))
        return tree

    paths = [f"/svc{i}/items/{i}" for i in range(10)] + [f"/static{i}/a/b" for i in range(10)]
    paths *= 50
    small, large = build(10), build(10_000)
    assert large.lookup("/svc9999/items/x") == ("9999", {"id": "x"})
    best_small = min(timed(small, paths) for _ in range(3))
    best_large = min(timed(large, paths) for _ in range(3))
    assert best_large < best_small * 3
