"""Parse large NDJSON files on several processes while the main process writes.

Python's JSON parsing and normalizing cost about as much CPU as DuckDB's insert; in one process
they share the GIL and a core. Each worker reads its own line-aligned chunk of the file (cut
during the hashing pass, :func:`pipeline.ingest.sources.files.scan_file`), normalizes and attributes it,
and returns sealed Arrow batches. Results come back in file order and at most ``window`` chunks
are in flight, so memory stays bounded however large the file is.

Workers die with the process that started them, even when it is killed with SIGKILL (Linux:
``PR_SET_PDEATHSIG``; elsewhere, and as a backstop, a thread that exits when the parent changes),
so a killed ingest leaves no ~200 MiB parser behind; the multiprocessing resource tracker then
sees its last user gone and exits too. A worker that dies (out of memory, killed) does not fail
the file: its chunk is parsed in this process instead and the pool is started afresh.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path

from models.inventory import Attributor
from pipeline.ingest.batches import Batch, to_batches
from pipeline.ingest.sources import files

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_INTERVAL = 1.0  # seconds between the backstop thread's looks at the parent

_attribute: Attributor | None = None
_batch_size = 10_000
_now: datetime | None = None


def _init_worker(attribute: Attributor, batch_size: int, now: datetime, parent: int) -> None:
    global _attribute, _batch_size, _now
    _attribute, _batch_size, _now = attribute, batch_size, now
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends, however it ends: the kernel sends SIGKILL (Linux),
    and a daemon thread checks the parent every :data:`WATCH_INTERVAL` seconds (everywhere; it
    also covers the parent dying before the first is in place)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no libc to ask: the thread alone
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="trailwarden-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(1)


def _parse_chunk(path: str, chunk: files.Chunk, source: str, partition: str) -> list[Batch]:
    assert _attribute is not None
    return parse_chunk(path, chunk, source, partition, _attribute, _batch_size, _now)


def parse_chunk(path: str, chunk: files.Chunk, source: str, partition: str, attribute: Attributor,
                batch_size: int, now: datetime | None) -> list[Batch]:
    """The sealed batches of one chunk (what a worker does; also the fallback here)."""
    items = files.read_chunk(Path(path), chunk)
    batches = [b.seal() for b in to_batches(items, source, partition, attribute, batch_size, now)]
    batches[-1].progress = chunk.end - chunk.start
    return batches


class ParsePool:
    """A lazily started process pool; use as a context manager."""

    def __init__(self, attribute: Attributor, batch_size: int, workers: int | None = None,
                 now: datetime | None = None):
        self._attribute = attribute
        self._batch_size = batch_size
        self._workers = max(1, workers or os.cpu_count() or 1)
        self._now = now or datetime.now(UTC)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _submit(self, path: Path, chunk: files.Chunk, source: str, partition: str) -> Future[list[Batch]]:
        for _ in range(2):
            if self._executor is None:
                # spawn, not fork: the parent holds DuckDB's threads and an open database.
                self._executor = ProcessPoolExecutor(
                    max_workers=self._workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(self._attribute, self._batch_size, self._now, os.getpid()))
            try:
                return self._executor.submit(_parse_chunk, str(path), chunk, source, partition)
            except BrokenProcessPool:  # a worker died since: start afresh
                self._stop()
        raise BrokenProcessPool("the parse workers keep dying at start")

    def parse(self, path: Path, chunks: Sequence[files.Chunk], source: str,
              partition: str) -> Iterator[Batch]:
        """Batches of the whole file, in order. An ``OSError`` reading it is raised (the file
        is skipped); a worker that died has its chunk parsed here instead."""
        window: deque[tuple[files.Chunk, Future[list[Batch]]]] = deque()
        pending = iter(chunks)
        try:
            for chunk in pending:
                window.append((chunk, self._submit(path, chunk, source, partition)))
                if len(window) >= 2 * self._workers:
                    break
            while window:
                chunk, future = window.popleft()
                batches = self._result(future, path, chunk, source, partition)
                following = next(pending, None)
                if following is not None:
                    window.append((following, self._submit(path, following, source, partition)))
                yield from batches
        finally:  # abandoned (the file failed, the ingest stops): nothing more is parsed for it
            for _, future in window:
                future.cancel()

    def _result(self, future: Future[list[Batch]], path: Path, chunk: files.Chunk, source: str,
                partition: str) -> list[Batch]:
        try:
            return future.result()
        except OSError:
            raise
        except BrokenProcessPool:
            log.warning("a parse worker died while reading %s (bytes %s-%s); parsing that part here",
                        path, chunk.start, chunk.end)
            self._stop()
            return parse_chunk(str(path), chunk, source, partition, self._attribute, self._batch_size, self._now)
