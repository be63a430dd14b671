"""Read a file once, in blocks of whole lines, hash it, and map a function over the blocks in order.

The main process reads the file sequentially (so the whole-file SHA-256 costs no second read) and
hands each block to a worker process; results come back in file order whatever order the workers
finish in. At most `2 * workers` blocks are in flight, so memory stays bounded whatever the file size.
With one worker everything runs in the calling process. Workers are started with `spawn`, never
`fork`, because the caller (the apply engine) may be running threads.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

DEFAULT_BLOCK_BYTES = 8 << 20
_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Block:
    index: int
    offset: int  # byte offset of the block's first line in the file
    size: int
    data: bytes  # whole lines, the last ending in a newline unless the file does not; b"" once handed off


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
    """Blocks of at least `block_bytes` (except the last) that end after a newline.

    The boundaries depend only on the file's bytes and `block_bytes`, so a second pass with the same
    `block_bytes` sees exactly the same blocks. A line longer than a block extends its block.
    """
    pending: list[bytes] = []
    pending_size = 0
    offset = 0
    index = 0
    while True:
        chunk = file.read(min(_READ_BYTES, block_bytes))
        if not chunk:
            break
        file_hash.update(chunk)
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size < block_bytes:
            continue
        cut = chunk.rfind(b"\n")
        if cut < 0:
            continue  # a very long line: keep reading until it ends
        head = chunk[:cut + 1]
        pending[-1] = head
        data = b"".join(pending)
        yield Block(index, offset, len(data), data)
        index += 1
        offset += len(data)
        rest = chunk[cut + 1:]
        pending = [rest] if rest else []
        pending_size = len(rest)
    if pending_size:
        data = b"".join(pending)
        yield Block(index, offset, len(data), data)


def map_blocks(blocks: Iterator[Block], fn: Callable, args: Callable[[Block], tuple],
               workers: int) -> Iterator[tuple[Block, object]]:
    """(block, fn(block.data, *args(block))) for each block, in file order."""
    if workers <= 1:
        for block in blocks:
            yield _strip(block), fn(block.data, *args(block))
        return
    with _pool(workers) as pool:
        window: deque = deque()
        for block in blocks:
            window.append((_strip(block), pool.submit(fn, block.data, *args(block))))
            del block
            if len(window) >= 2 * workers:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()


def default_workers(file_size: int, block_bytes: int) -> int:
    """One process for a file of a few blocks; otherwise one per usable core (at most 8)."""
    if file_size < 4 * block_bytes:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _pool(workers: int) -> Executor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _strip(block: Block) -> Block:
    # Callers get the block's position only: its bytes are freed as soon as the worker has them.
    return Block(block.index, block.offset, block.size, b"")
