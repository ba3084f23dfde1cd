"""Images: virtual environments built from a requirements text, one build per distinct text.

An image lives in `<root>/<digest>/` (a venv; the digest hashes the requirements and the base
interpreter), so images with identical requirements share one build, and a build that finished
before a restart is reused. A venv is created without pip (`python -m venv --without-pip`, ~0.1 s
against ~7 s with pip), then the requirements are installed into it from outside:

- `uv pip install --python <venv>` when uv is available (~0.2 s for a local wheel), else
- `python -m pip --python <venv> install` with eventgate's own pip (pip >= 22.3, ~1.8 s), else
- the venv is created with pip and its own pip installs (slowest, always works).

Several processes may share the root (`eventgate serve --workers N`): a build holds the lock
file `<root>/<digest>.lock` (`filelock.py`) and first looks again for the finished marker, so a
process that asks for an image another one is building waits for that build and reuses it, and
removing a build takes the same lock.

The image never sees eventgate's site-packages (`system_site_packages` is off), and the
installer (which may run a package's build code) gets only the variables an installer needs:
PATH, HOME, locale, temp dir, proxies, certificates and PIP_*/UV_* settings.
"""

import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from eventgate.errors import NotFound
from eventgate.runtime.filelock import file_lock

Installer = Literal["auto", "uv", "pip"]

_READY_MARKER = "eventgate-image.json"
_BUILD_ENV_NAMES = {
    "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
    "no_proxy", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
}  # fmt: skip
_BUILD_ENV_PREFIXES = ("PIP_", "UV_")
_MAX_LOG_CHARS = 256 * 1024


class ImageStatus(StrEnum):
    CREATING = "CREATING"
    READY = "READY"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Image:
    """An image as the API shows it: status, the installer's output, and its interpreter."""

    name: str
    digest: str
    requirements: str
    status: ImageStatus
    log: str
    python: Path


def requirements_digest(requirements: str) -> str:
    """The build key: the requirements (blank lines, outer spaces ignored) and the interpreter."""
    lines = [line.strip() for line in requirements.splitlines() if line.strip()]
    key = "\n".join([sys.version, sys.base_prefix, *lines])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class _Build:
    def __init__(self, status: ImageStatus, log: str = "") -> None:
        self.status = status
        self.log = log
        self.task: asyncio.Task[None] | None = None


class ImageStore:
    """Builds images in subprocesses and keeps their status by name."""

    def __init__(self, root: Path, installer: Installer = "auto", build_timeout: float = 900.0):
        if installer == "uv" and _find_uv() is None:
            raise ValueError("the uv installer was asked for, but uv is not installed")
        self._root = root
        self._installer = installer
        self._build_timeout = build_timeout
        self._names: dict[str, tuple[str, str]] = {}  # name -> (digest, requirements)
        self._builds: dict[str, _Build] = {}

    def submit(self, name: str, requirements: str) -> Image:
        """Start building (or reuse the build of identical requirements); returns at once."""
        digest = requirements_digest(requirements)
        self._names[name] = (digest, requirements)
        build = self._builds.get(digest)
        if build is None and (log := self._finished_log(digest)) is not None:
            build = self._builds[digest] = _Build(ImageStatus.READY, log)
        if build is None or build.status is ImageStatus.ERROR:
            build = self._builds[digest] = _Build(ImageStatus.CREATING)
            build.task = asyncio.create_task(self._build(digest, requirements, build))
        return self.get(name)

    async def build(self, name: str, requirements: str) -> Image:
        """Build and wait: the image is READY or ERROR when this returns."""
        self.submit(name, requirements)
        return await self.wait(name)

    async def wait(self, name: str) -> Image:
        digest = self.get(name).digest
        task = self._builds[digest].task
        if task is not None:
            await asyncio.shield(task)
        return self.get(name)

    def get(self, name: str) -> Image:
        try:
            digest, requirements = self._names[name]
        except KeyError:
            raise NotFound(f"image {name!r} not found") from None
        build = self._builds[digest]
        python = self._root / digest / "bin" / "python"
        return Image(name, digest, requirements, build.status, build.log, python)

    def all(self) -> list[Image]:
        return [self.get(name) for name in sorted(self._names)]

    async def delete(self, name: str, *, keep_files: bool = False) -> None:
        """Forget the name; remove the build when no other name uses it (its files stay with
        `keep_files`: images this store was not asked for, or another process, use them)."""
        digest = self.get(name).digest
        del self._names[name]
        if any(other == digest for other, _ in self._names.values()):
            return
        build = self._builds.pop(digest)
        if build.task is not None:
            build.task.cancel()
            await asyncio.gather(build.task, return_exceptions=True)
        if not keep_files:
            async with file_lock(self._lock_path(digest)):
                await asyncio.to_thread(shutil.rmtree, self._root / digest, True)

    async def close(self) -> None:
        """Stop builds in progress (their subprocesses are killed)."""
        tasks = [build.task for build in self._builds.values() if build.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished_log(self, digest: str) -> str | None:
        """The log of a finished build of `digest` (by any process), or None if there is none."""
        try:
            return (self._root / digest / _READY_MARKER).read_text()
        except OSError:
            return None

    def _lock_path(self, digest: str) -> Path:
        return self._root / f"{digest}.lock"

    async def _build(self, digest: str, requirements: str, build: _Build) -> None:
        async with file_lock(self._lock_path(digest)):
            log = await asyncio.to_thread(self._finished_log, digest)
            if log is not None:  # another process built it while this one waited
                build.status, build.log = ImageStatus.READY, log
                return
            await self._build_locked(digest, requirements, build)

    async def _build_locked(self, digest: str, requirements: str, build: _Build) -> None:
        directory = self._root / digest
        log: list[str] = []
        try:
            async with asyncio.timeout(self._build_timeout):
                ok = await self._create(directory, requirements, log)
        except TimeoutError:
            log.append(f"the build took longer than {self._build_timeout:g}s and was stopped\n")
            ok = False
        except OSError as exc:  # the interpreter or the installer could not start, disk errors
            log.append(f"{exc}\n")
            ok = False
        text = "".join(log)[-_MAX_LOG_CHARS:]
        if ok:
            await asyncio.to_thread(_write_marker, directory, text)
        build.status, build.log = (ImageStatus.READY if ok else ImageStatus.ERROR), text

    async def _create(self, directory: Path, requirements: str, log: list[str]) -> bool:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        command, with_pip = self._install_command(directory)
        venv = [sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"])]
        if not await _run([*venv, str(directory)], directory.parent, log):
            return False
        if not requirements.strip():
            return True
        requirements_file = directory / "requirements.txt"
        requirements_file.write_text(requirements)
        return await _run([*command, "-r", str(requirements_file)], directory, log)

    def _install_command(self, directory: Path) -> tuple[list[str], bool]:
        """The installer's command (without `-r FILE`), and whether the venv needs its own pip."""
        python = str(directory / "bin" / "python")
        quiet_pip = ["install", "--no-input", "--disable-pip-version-check"]
        uv = _find_uv()
        if self._installer in ("auto", "uv") and uv is not None:
            return [uv, "pip", "install", "--python", python], False
        if _parent_pip_supports_python():
            return [sys.executable, "-m", "pip", "--python", python, *quiet_pip], False
        return [python, "-m", "pip", *quiet_pip], True


def _write_marker(directory: Path, text: str) -> None:
    """Mark the build finished, atomically: another process may be looking for the marker."""
    temporary = directory / f".{_READY_MARKER}.tmp"
    temporary.write_text(text)
    os.replace(temporary, directory / _READY_MARKER)


def _find_uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.is_file() else shutil.which("uv")


def _parent_pip_supports_python() -> bool:
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return False
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= (22, 3)


def installer_env() -> dict[str, str]:
    """The variables an installer gets: what it needs to find and fetch packages, nothing else."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in _BUILD_ENV_NAMES or name.startswith(_BUILD_ENV_PREFIXES)
    }


async def _run(command: list[str], cwd: Path, log: list[str]) -> bool:
    """Run one build step, appending the command and its output to the log."""
    log.append(f"$ {' '.join(command)}\n")
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=installer_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    log.append(output.decode("utf-8", "replace"))
    if process.returncode != 0:
        log.append(f"exited with code {process.returncode}\n")
    return process.returncode == 0
