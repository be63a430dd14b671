"""Read a file once, in blocks of whole lines, hash it, and run work on the blocks in worker processes.

The main process reads the file sequentially (so the whole-file SHA-256 costs no second read) and
hands each block to a worker; results come back in file order whatever order the workers finish in.
At most `2 * workers` blocks are in flight, so memory stays bounded whatever the file size. Given the
file's path, a worker reads its block from the file itself (from the page cache, where the main
process's read just put it) and checks it against the CRC-32 of the bytes the main process read and
hashed, so that what is validated is what is hashed; sending a block's bytes through a pipe would
cost more CPU than hashing them (pickling, two copies through the kernel, unpickling). Without the
path (or without `os.pread`), a block is sent as the raw read plus the bytes carried over from the
previous read. With one worker everything runs in the calling process, through the same code.
Workers are started with `spawn`, never `fork`, because the caller (the apply engine) may be running
threads.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT_BLOCK_BYTES = 4 << 20  # 8 MB was measured no faster, with a third more peak memory
PARALLEL_MIN_BYTES = 64 << 20  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class Block:
    """Lines `head + body[:end]` of the file, starting at byte `offset`.

    `body` is one read from the file; `head` is the start of the block's first line, carried over
    from earlier reads. Every line of the block is whole: it ends in a newline, except the file's last
    line when the file does not end in one.
    """

    index: int
    offset: int
    size: int
    head: bytes
    body: bytes
    end: int

    def parts(self) -> tuple[bytes, bytes, int]:
        return self.head, self.body, self.end


def split_lines(parts: tuple[bytes, bytes, int]) -> list[bytes]:
    """The lines of a block (without their newlines)."""
    head, body, _ = parts  # every newline of body is before `end`: body[end:] is an unfinished line
    lines = body.split(b"\n")
    lines.pop()  # b"" after a final newline, or the start of a line that belongs to the next block
    if head:
        if lines:
            lines[0] = head + lines[0]
        else:  # the file's last line, without a newline
            lines.append(head)
    return lines


class FileHash:
    """The SHA-256 and size of everything read so far."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def read_blocks(file, block_bytes: int, file_hash: FileHash) -> Iterator[Block]:
    """Blocks of about `block_bytes` that end after a newline.

    The boundaries depend only on the file's bytes and `block_bytes`, so a second pass with the same
    `block_bytes` sees exactly the same blocks. A line longer than a block extends its block.
    """
    carried = b""  # the start of an unfinished line
    pending: list[bytes] = []  # whole reads without a newline (inside a very long line)
    offset = 0
    index = 0
    while body := file.read(block_bytes):
        file_hash.update(body)
        cut = body.rfind(b"\n")
        if cut < 0:
            pending.append(body)
            continue
        head = b"".join([carried, *pending]) if pending else carried
        pending = []
        end = cut + 1
        yield Block(index, offset, len(head) + end, head, body, end)
        index += 1
        offset += len(head) + end
        carried = body[end:]
    if carried or pending:
        head = b"".join([carried, *pending])
        yield Block(index, offset, len(head), head, b"", 0)


class FileChanged(Exception):
    """A worker read other bytes than the main process read at the same place: the file is being
    changed."""


def map_blocks(blocks: Iterator[Block], fn: Callable, args: Callable[[Block], tuple], pool: Executor,
               workers: int, source: str | None = None) -> Iterator[tuple[Block, object]]:
    """(block, fn(block.parts(), *args(block))) for each block, in file order; the yielded blocks
    carry no data. At most `2 * workers` blocks are in flight. With `source`, the path of the file
    the blocks come from, pool workers read their blocks from it (`read_block`), and a block that
    has changed there raises `FileChanged`."""
    window: deque = deque()
    limit = 2 * max(workers, 1)
    by_position = source is not None and hasattr(os, "pread") and not isinstance(pool, InlineExecutor)
    if by_position:
        source = os.path.abspath(source)
    for block in blocks:
        if by_position:
            crc = zlib.crc32(memoryview(block.body)[:block.end], zlib.crc32(block.head))
            future = pool.submit(_from_file, fn, source, block.offset, block.size, crc, *args(block))
        else:
            future = pool.submit(fn, block.parts(), *args(block))
        window.append((_position(block), future))
        del block
        if len(window) >= limit:
            done, future = window.popleft()
            yield done, future.result()
    while window:
        done, future = window.popleft()
        yield done, future.result()


def read_block(path: str, offset: int, size: int, crc: int) -> tuple[bytes, bytes, int]:
    """The `Block.parts()` of the block at `offset`, read from the file at `path`; raises
    FileChanged unless its bytes have the CRC-32 `crc` (or when the file cannot be read any more)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
            while len(data) < size and (more := os.pread(fd, size - len(data), offset + len(data))):
                data += more
        finally:
            os.close(fd)
    except OSError:  # removed, or made unreadable, since the main process opened it
        raise FileChanged(path) from None
    if len(data) != size or zlib.crc32(data) != crc:
        raise FileChanged(path)
    # A block ends after a newline, except the file's unterminated last line, which is a block alone.
    return (b"", data, size) if data.endswith(b"\n") else (data, b"", 0)


def _from_file(fn: Callable, path: str, offset: int, size: int, crc: int, *args):
    return fn(read_block(path, offset, size, crc), *args)


def default_workers(file_size: int) -> int:
    """One process for a small file; otherwise one per usable core (at most 8)."""
    if file_size < PARALLEL_MIN_BYTES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


POOL_IDLE_SECONDS = 30.0  # how long an unused pool's workers are kept for the next scan or write


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor]:
    """A process pool of `workers` for the length of the `with` block, or an executor that runs each
    call at once in this process.

    Starting a worker process costs ~0.2 s of CPU and latency (a fresh interpreter and the imports),
    as much as scanning ~40 MB, so a pool that ended cleanly is kept for `POOL_IDLE_SECONDS` and
    reused by the next call of this process that asks for as many workers (write_splits right after
    scan_dataset, a plan then an apply). A pool is only ever used by one call at a time: a concurrent
    call starts its own. A call that fails stops its pool, waiting for the work already running (so
    nothing it started outlives it) and dropping the rest.
    """
    if workers <= 1:
        yield InlineExecutor()
        return
    pool = _take_idle_pool(workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    _keep_idle_pool(pool, workers)


_idle_lock = threading.Lock()
_idle: tuple[ProcessPoolExecutor, int, int, threading.Timer] | None = None  # (pool, workers, pid, timer)


def _take_idle_pool(workers: int) -> ProcessPoolExecutor:
    global _idle
    with _idle_lock:
        idle, _idle = _idle, None
    if idle is not None:
        pool, size, pid, timer = idle
        timer.cancel()
        # Not after a fork (the pool's threads and workers belong to the parent), nor a broken pool.
        if size == workers and pid == os.getpid() and not getattr(pool, "_broken", False):
            return pool
        pool.shutdown(wait=False, cancel_futures=True)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker)


def _keep_idle_pool(pool: ProcessPoolExecutor, workers: int) -> None:
    global _idle
    timer = threading.Timer(POOL_IDLE_SECONDS, _retire, (pool,))
    timer.daemon = True
    with _idle_lock:
        previous, _idle = _idle, (pool, workers, os.getpid(), timer)
    timer.start()
    if previous is not None:  # two calls ended: keep the latest pool
        previous[3].cancel()
        previous[0].shutdown(wait=False)


def _retire(pool: ProcessPoolExecutor) -> None:
    global _idle
    with _idle_lock:
        if _idle is None or _idle[0] is not pool:
            return
        _idle = None
    pool.shutdown(wait=True)


def _start_worker() -> None:
    # Workers use numpy for sorting only: no BLAS, so no BLAS thread pool spinning beside the work
    # (the variables are read when numpy is first imported, in this worker process only).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


class InlineExecutor(Executor):
    """Runs each submitted call immediately, in the calling process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _position(block: Block) -> Block:
    # Callers keep a block's position only: its bytes are freed as soon as the worker has them.
    return Block(block.index, block.offset, block.size, b"", b"", 0)
