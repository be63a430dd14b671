"""The training program's source as a SageMaker `sourcedir.tar.gz`, the same bytes every time.

The tarball holds exactly the files `code_hash("train")` covers (fastuner/providers/programs.py), so the
adapter identity's `training_code_hash` names the code a job runs. It is built reproducibly — members
sorted, mtime 0, uid/gid 0, no owner names, fixed modes, gzip header without a name or time — so the
same code has the same SHA-256 on every machine and is uploaded once to the content-addressed store
(`s3://BUCKET/PREFIX/code/<sha256>/sourcedir.tar.gz`); the toolkit in the image extracts it into
/opt/ml/code and runs `sagemaker_program` from there.
"""

from __future__ import annotations

import functools
import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from fastuner.providers.programs import CONTAINERS

SUFFIXES = (".py", ".txt", ".json")  # what code_hash covers


def source_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(name in the tarball, file) for each file of the program, in code_hash's order."""
    files = (p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts)
    for path in sorted(files):
        yield path.relative_to(root).as_posix(), path


def reproducible_tarball(root: Path) -> bytes:
    """A gzipped tar of `root`'s program files whose bytes depend only on their names and contents."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in source_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@functools.cache
def training_source() -> bytes:
    """containers/train as sourcedir.tar.gz (built once per process)."""
    return reproducible_tarball(CONTAINERS / "train")
