"""Parse large NDJSON files on several processes while the main process writes.

Python's JSON parsing and normalizing cost about as much CPU as DuckDB's insert; in one process
they share the GIL and a core. Each worker reads its own line-aligned chunk of the file (cut
during the hashing pass, :func:`pipeline.sources.files.scan_file`), normalizes and attributes it,
and returns sealed Arrow batches. Results come back in file order and at most ``window`` chunks
are in flight, so memory stays bounded however large the file is.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from models.inventory import Attributor
from pipeline.batches import Batch, to_batches
from pipeline.sources import files

_attribute: Attributor | None = None
_batch_size = 10_000


def _init_worker(attribute: Attributor, batch_size: int) -> None:
    global _attribute, _batch_size
    _attribute, _batch_size = attribute, batch_size


def _parse_chunk(path: str, chunk: files.Chunk, source: str, partition: str) -> list[Batch]:
    assert _attribute is not None
    items = files.read_chunk(Path(path), chunk)
    batches = [b.seal() for b in to_batches(items, source, partition, _attribute, _batch_size)]
    batches[-1].progress = chunk.end - chunk.start
    return batches


class ParsePool:
    """A lazily started process pool; use as a context manager."""

    def __init__(self, attribute: Attributor, batch_size: int, workers: int | None = None):
        self._attribute = attribute
        self._batch_size = batch_size
        self._workers = max(1, workers or os.cpu_count() or 1)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def parse(self, path: Path, chunks: Sequence[files.Chunk], source: str,
              partition: str) -> Iterator[Batch]:
        """Batches of the whole file, in order."""
        if self._executor is None:
            # spawn, not fork: the parent holds DuckDB's threads and an open database.
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self._attribute, self._batch_size))
        window: deque[Future[list[Batch]]] = deque()
        pending = iter(chunks)
        for chunk in pending:
            window.append(self._executor.submit(_parse_chunk, str(path), chunk, source, partition))
            if len(window) >= 2 * self._workers:
                break
        while window:
            batches = window.popleft().result()
            following = next(pending, None)
            if following is not None:
                window.append(self._executor.submit(_parse_chunk, str(path), following, source, partition))
            yield from batches
