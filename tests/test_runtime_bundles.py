"""Function sources: packing a folder, unpacking it by version, and refusing unsafe archives."""

import io
import tarfile
from pathlib import Path

import pytest

from eventgate.runtime.bundles import (
    BundleError,
    BundleTooLarge,
    decode_source,
    pack_directory,
    unpack,
)


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(
    name: str, data: bytes = b"x = 1\n", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_a_folder_round_trips_and_the_same_files_give_the_same_version(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "hello.py").write_text("def handle(ctx, payload):\n    return 1\n")
    (source / "pkg" / "__init__.py").write_text("")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    (source / "pkg" / "__pycache__").mkdir()
    (source / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")

    first = unpack(pack_directory(source), tmp_path / "functions")
    (source / "hello.py").touch()
    again = unpack(pack_directory(source), tmp_path / "functions")

    assert first == again
    assert first.path == tmp_path / "functions" / first.version
    assert (first.path / "hello.py").read_text().startswith("def handle")
    assert (first.path / "pkg" / "__init__.py").exists()
    assert (first.path / "run.sh").stat().st_mode & 0o111
    assert not (first.path / "pkg" / "__pycache__").exists()
    assert [p.name for p in (tmp_path / "functions").iterdir()] == [first.version]


def test_links_inside_the_source_are_kept(tmp_path: Path) -> None:
    data = archive(
        regular("lib/real.py", b"VALUE = 1\n"),
        link("alias.py", "lib/real.py"),
        link("copy.py", "lib/real.py", tarfile.LNKTYPE),
    )

    bundle = unpack(data, tmp_path)

    assert (bundle.path / "alias.py").read_text() == "VALUE = 1\n"
    assert (bundle.path / "alias.py").is_symlink()
    assert (bundle.path / "copy.py").read_text() == "VALUE = 1\n"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([regular("/etc/evil.py")], "absolute"),
        ([regular("../evil.py")], "'..'"),
        ([regular("ok/../../evil.py")], "'..'"),
        ([link("evil", "/etc/passwd")], "relative"),
        ([link("evil", "../../outside")], "leads out"),
        ([link("up", ".."), regular("up/evil.py")], "leads out"),
        ([link("hard", "/etc/passwd", tarfile.LNKTYPE)], "not in the source"),
        ([regular("twice.py"), regular("twice.py")], "twice"),
    ],
)
def test_unsafe_archives_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        unpack(archive(*members), tmp_path / "functions")

    assert list((tmp_path / "functions").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["functions"]


def test_device_files_are_refused(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE

    with pytest.raises(BundleError, match="only files, folders and links"):
        unpack(archive((fifo, None)), tmp_path)


def test_size_and_file_count_are_bounded(tmp_path: Path) -> None:
    big = archive(regular("big.bin", b"\0" * 10_000))
    many = archive(*(regular(f"f{i}.py") for i in range(11)))

    with pytest.raises(BundleTooLarge, match="over 5000 bytes") as too_big:
        unpack(big, tmp_path, max_bytes=5000)
    with pytest.raises(BundleTooLarge, match="more than 10 entries"):
        unpack(many, tmp_path, max_files=10)

    assert too_big.value.status == 413
    assert unpack(big, tmp_path, max_bytes=10_000).path.is_dir()


@pytest.mark.parametrize(
    ("source", "message"),
    [("not base64!", "not valid base64"), ("aGVsbG8=", "not a readable .tar.gz")],
)
def test_bad_sources_are_refused(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(BundleError, match=message) as refused:
        unpack(decode_source(source), tmp_path)

    assert refused.value.status == 400
