"""Where outputs live: a local folder or a remote URI (``s3://``, ``gs://``, ...) through ``pyarrow.fs``.

On a multi-node cluster every worker writes its parts directly to the store, so the output must be a
shared filesystem path or an object-store URI. Atomic commits: on a local/shared filesystem a file is
written under a temporary name and renamed; on an object store a single PUT is already atomic (an
object is visible whole or not at all), so it is written in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` other than ``file://``."""
    return "://" in str(path) and not str(path).startswith("file://")


class Store:
    """A folder on some filesystem, addressed by paths relative to it (``"clips/part-x.parquet"``)."""

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        if is_uri(root):
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self.local = False
        else:
            root = root[len("file://"):] if root.startswith("file://") else root
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(root)
            self.local = True
        self.uri = root if not self.local else self.base

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` (for ``pyarrow`` calls taking ``filesystem=self.fs``)."""
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def url(self, rel: str) -> str:
        """A path or URI of ``rel`` that other tools (Ray Data, pandas) can open on their own."""
        return self.path(rel) if self.local else f"{self.uri.rstrip('/')}/{rel}"

    def makedirs(self, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def list(self, rel: str, prefix: str = "", suffix: str = "") -> list[str]:
        """Sorted names (not paths) of files directly in ``rel`` matching prefix/suffix."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        names = [i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))

    def list_sizes(self, rel: str, prefix: str = "", suffix: str = "") -> dict[str, int]:
        """``{name: size in bytes}`` of the files directly in ``rel`` matching prefix/suffix (one LIST)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        return {i.base_name: int(i.size) for i in self.fs.get_file_info(sel)
                if i.type == pafs.FileType.File and i.base_name.startswith(prefix) and i.base_name.endswith(suffix)}

    def size(self, rel: str) -> int | None:
        """Byte size of ``rel`` (``None`` when it does not exist)."""
        info = self.fs.get_file_info(self.path(rel))
        return None if info.type == pafs.FileType.NotFound else int(info.size)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_dir(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def mtime_ns(self, rel: str) -> int | None:
        return self.fs.get_file_info(self.path(rel)).mtime_ns

    def temp_name(self, rel: str) -> str:
        """A hidden temporary sibling of ``rel`` (local stores rename it into place)."""
        d, name = rel.rsplit("/", 1) if "/" in rel else ("", rel)
        tmp = f".{name}.{uuid.uuid4().hex}.tmp"
        return f"{d}/{tmp}" if d else tmp

    def commit(self, tmp_rel: str, final_rel: str) -> None:
        """Rename a finished temporary file into place (atomic on POSIX filesystems)."""
        self.fs.move(self.path(tmp_rel), self.path(final_rel))

    def write_table(self, table: pa.Table, rel: str) -> None:
        """Write a Parquet file atomically."""
        if not self.local:
            pq.write_table(table, self.path(rel), filesystem=self.fs)
            return
        tmp = self.temp_name(rel)
        pq.write_table(table, self.path(tmp), filesystem=self.fs)
        self.commit(tmp, rel)

    def read_table(self, rel: str, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs, schema=schema, columns=columns)

    def write_json(self, obj: Any, rel: str) -> None:
        data = json.dumps(obj, indent=2).encode()
        target = self.temp_name(rel) if self.local else rel
        with self.fs.open_output_stream(self.path(target)) as f:
            f.write(data)
        if self.local:
            self.commit(target, rel)

    def read_json(self, rel: str) -> Any:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return json.loads(f.read().decode())

    # --------------------------------------------------------------------------------------------
    # files of any kind, folders, local copies (run folders, checkpoints, score files)
    # --------------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, data: bytes, rel: str) -> None:
        """Write a file atomically (a temporary sibling renamed into place locally; one PUT, which is
        never visible half-written, on an object store). Local parent folders are created."""
        if self.local:
            self.makedirs(rel.rsplit("/", 1)[0] if "/" in rel else "")
        target = self.temp_name(rel) if self.local else rel
        with self.fs.open_output_stream(self.path(target)) as f:
            f.write(data)
        if self.local:
            self.commit(target, rel)

    def is_dir(self, rel: str) -> bool:
        """A folder (on an object store: a prefix with at least one object under it)."""
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def list_dirs(self, rel: str) -> list[str]:
        """Sorted names of the folders directly in ``rel``."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory)

    def upload(self, local: str | os.PathLike, rel: str) -> None:
        """Copy a local file or folder to ``rel`` (streamed)."""
        src = Path(local)
        if src.is_dir():
            pafs.copy_files(str(src.resolve()), self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)  # fmt: skip
        else:
            self.write_bytes(src.read_bytes(), rel)

    def download(self, rel: str, local: str | os.PathLike) -> Path:
        """Copy the file or folder ``rel`` to a local path (streamed); returns it."""
        dst = Path(local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(rel), str(dst.resolve()), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        return dst


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (a URI keeps its scheme)."""
    b = str(base)
    return "/".join([b.rstrip("/"), *[p.strip("/") for p in parts if p]]) if is_uri(b) else str(Path(b, *parts))


def split(target: str | os.PathLike) -> tuple[Store, str]:
    """``(Store of the parent folder, file name)`` of a path or URI."""
    t = str(target).rstrip("/")
    if is_uri(t):
        parent, name = t.rsplit("/", 1)
        return Store(parent), name
    p = Path(t).expanduser().resolve()
    return Store(p.parent), p.name


@contextlib.contextmanager
def local_file(target: str | os.PathLike) -> Iterator[Path]:
    """A local path to write ``target`` through: ``target`` itself when it is local (its folder
    created), else a temporary file uploaded to the URI when the block ends without an error."""
    if not is_uri(str(target)):
        p = Path(str(target).removeprefix("file://"))
        p.parent.mkdir(parents=True, exist_ok=True)
        yield p
        return
    st, name = split(target)
    d = tempfile.mkdtemp(prefix="vidray-up-")
    try:
        yield Path(d) / name
        for f in sorted(Path(d).iterdir()):  # the file, and any sibling written next to it
            st.upload(f, f.name)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def local_copy(source: str | os.PathLike) -> Iterator[Path]:
    """A local path to read ``source`` from: itself when local, else a temporary download."""
    if not is_uri(str(source)):
        yield Path(str(source).removeprefix("file://"))
        return
    st, name = split(source)
    d = tempfile.mkdtemp(prefix="vidray-down-")
    try:
        yield st.download(name, Path(d) / name)
    finally:
        shutil.rmtree(d, ignore_errors=True)
