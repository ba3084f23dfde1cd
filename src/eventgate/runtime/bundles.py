"""Function sources: a `.tar.gz` of a folder, unpacked safely into a directory named by its hash.

An archive may hold regular files, directories, hard links to its own files and symbolic links
that stay inside it. Absolute paths, `..`, links leading out, device files, duplicate entries and
archives over the size or file-count bound are refused.
"""

import base64
import binascii
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TypeVar

from eventgate.errors import EventgateError, ValidationFailed

MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_FILES = 20_000
_CHUNK = 1024 * 1024

T = TypeVar("T")


class BundleError(ValidationFailed):
    """The source is not a usable archive."""


class BundleTooLarge(EventgateError):
    """The unpacked source is over the size or file-count bound."""

    status = 413


@dataclass(frozen=True, slots=True)
class Bundle:
    """An unpacked source folder and its version (a hash of the archive)."""

    version: str
    path: Path


def decode_source(source: str) -> bytes:
    """The archive in a base64 `source` field."""
    try:
        return base64.b64decode(source, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError(f"the source is not valid base64: {exc}") from None


def pack_directory(directory: Path) -> bytes:
    """A `.tar.gz` of the folder's contents; the same files always give the same bytes."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for entry in [*dirs, *sorted(files)]:
                path = Path(root, entry)
                info = tar.gettarinfo(str(path), path.relative_to(directory).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with path.open("rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def unpack(
    archive: bytes, root: Path, *, max_bytes: int = MAX_UNPACKED_BYTES, max_files: int = MAX_FILES
) -> Bundle:
    """Unpack into `root/<version>` (kept if it is already there) and return it."""
    version = hashlib.sha256(archive).hexdigest()[:16]
    target = root / version
    if target.is_dir():
        return Bundle(version, target)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        _extract(archive, staging, max_bytes, max_files)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else another unpack of the same version won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Bundle(version, target)


def _extract(archive: bytes, staging: Path, max_bytes: int, max_files: int) -> None:
    budget = _Budget(max_bytes)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_files:
                    raise BundleTooLarge(f"the source has more than {max_files} entries")
                _extract_member(tar, member, staging, budget)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleError(f"the source is not a readable .tar.gz archive: {exc}") from None


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise BundleTooLarge(f"the unpacked source is over {self.limit} bytes")


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, budget: _Budget
) -> None:
    relative = _relative_path(member.name)
    if relative is None:
        return
    dest = staging.joinpath(*relative.parts)
    if member.isdir():
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        _check_inside(staging, dest, member.name)
        return
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_inside(staging, dest.parent, member.name)
    if member.issym():
        if PurePosixPath(member.linkname).is_absolute():
            raise BundleError(f"{member.name}: links must be relative")
        _create(lambda: os.symlink(member.linkname, dest), member.name)
        _check_inside(staging, dest, member.name)
    elif member.isfile() or member.islnk():
        try:
            content = tar.extractfile(member)
        except KeyError:
            raise BundleError(f"{member.name}: the link target is not in the source") from None
        if content is None:
            raise BundleError(f"{member.name}: the link does not point to a file")
        mode = 0o755 if member.mode & 0o111 else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = _create(lambda: os.open(dest, flags, mode), member.name)
        with content, os.fdopen(fd, "wb") as out:
            _copy(content, out, budget)
    else:
        raise BundleError(f"{member.name}: only files, folders and links are allowed")


def _relative_path(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BundleError(f"{name}: absolute paths and '..' are not allowed")
    parts = [part for part in path.parts if part != "."]
    return PurePosixPath(*parts) if parts else None


def _check_inside(staging: Path, path: Path, name: str) -> None:
    real_root = os.path.realpath(staging)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise BundleError(f"{name}: the path leads out of the source")


def _create(action: Callable[[], T], name: str) -> T:
    try:
        return action()
    except FileExistsError:
        raise BundleError(f"{name}: the entry appears twice in the source") from None


def _copy(source: IO[bytes], out: IO[bytes], budget: _Budget) -> None:
    while chunk := source.read(_CHUNK):
        budget.spend(len(chunk))
        out.write(chunk)
