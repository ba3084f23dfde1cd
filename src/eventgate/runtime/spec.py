"""What the runtime is told: one function version to run, and the limits of the runtime itself."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_HANDLER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """One version of a python function: where its code and interpreter are, and its limits.

    `memory_mb` bounds what a call may allocate on top of the loaded function (an address-space
    limit, RLIMIT_AS, so memory reserved but never touched counts too). `secrets` are the values
    every call sees in `context["secrets"]`; a call's own `context["secrets"]` adds to them.
    """

    space: str
    name: str
    version: str
    python: Path  # the image's interpreter
    handler: str  # "module.function", e.g. "hello.handle"
    bundle: Path  # the unpacked source folder
    timeout: float = 5.0
    memory_mb: int | None = None
    concurrency: int = 4
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _HANDLER.match(self.handler):
            raise ValueError(f"handler {self.handler!r} must look like 'module.function'")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ValueError("memoryMB must be at least 1")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"environment variable {key!r} has an invalid name or value")

    @property
    def key(self) -> tuple[str, str]:
        return (self.space, self.name)


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Limits and timeouts of the runtime (seconds, bytes, characters)."""

    worker_idle_timeout: float = 30.0  # an idle worker exits after this long
    server_idle_timeout: float = 300.0  # a function with no calls stops its fork server (to zero)
    queue_limit: int = 64  # callers that may wait for a busy function before 429
    start_timeout: float = 60.0  # interpreter start plus handler import
    drain_timeout: float = 30.0  # how long an old version may finish its calls on update/delete
    log_limit: int = 64 * 1024  # characters kept per stream (stdout, stderr) per call
    max_response_bytes: int = 16 * 1024 * 1024
    base_env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    )
