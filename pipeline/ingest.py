"""Items from a source -> typed events -> the store, exactly once in effect.

Parsing runs in the calling thread while a writer thread commits the previous batch, so Python's
JSON work and DuckDB's insert overlap on two cores. Each batch is one transaction holding its
events, its quarantined input and the source state that covers it; a file's "done" record is
written with its last batch. A kill -9 therefore loses at most uncommitted work, and the retry
skips what was committed (files by content hash, events by ``eventId``).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from models.inventory import Attributor
from pipeline.events import Event, MalformedEvent, normalize
from pipeline.parse_pool import ParsePool
from pipeline.sources import files
from pipeline.store import Store, events_to_arrow, utcnow

BATCH_SIZE = 10_000
PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # smaller files are not worth starting processes for
FILES_PARTITION = ""


@dataclass
class IngestReport:
    """What an ingest did; rendered by the CLI and recorded in ``runs``."""

    files: int = 0
    skipped_files: int = 0  # already ingested (same content hash)
    events: int = 0  # events read
    new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    first_event: datetime | None = None
    last_event: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}

    def add_batch(self, batch: Batch, new: int) -> None:
        self.events += batch.count
        self.new += new
        self.duplicates += batch.count - new
        self.quarantined += len(batch.bad)
        if batch.first and batch.last:
            self.first_event = min(self.first_event or batch.first, batch.first)
            self.last_event = max(self.last_event or batch.last, batch.last)


@dataclass
class Batch:
    """Events and rejects from one source partition, committed in one transaction.

    :meth:`seal` turns the events into an Arrow table on the producer's thread (that is Python
    work, holding the GIL), so the writer thread only runs DuckDB, which releases it.
    """

    source: str
    partition: str
    events: list[Event] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # location, reason, raw
    cursor: str | None = None  # source-specific resume point after this batch
    file: FileRecord | None = None  # the file this batch came from, if any
    closes_file: bool = False  # the file's last batch: record the file as ingested with it
    progress: int = 0  # bytes (or items) this batch advanced
    table: pa.Table | None = None
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def seal(self) -> Batch:
        if self.events:
            times = [e.event_time for e in self.events]
            self.first, self.last = min(times), max(times)
        self.count = len(self.events)
        self.table = events_to_arrow(self.events, self.agents, self.source, utcnow())
        self.events, self.agents = [], []
        return self


class BatchWriter:
    """Commits batches on a background thread, grouped into transactions of about a DuckDB row
    group (122,880 rows): DuckDB then writes the rows straight to the data file instead of the
    WAL, which halves the cost of a bulk load. ``submit`` blocks while two batches wait.
    """

    group_rows = 122_880

    def __init__(self, store: Store, report: IngestReport, progress: Callable[[int], None] | None):
        # DuckDB takes the GIL briefly for each Arrow chunk it scans; with the producer holding it
        # for the default 5 ms slices, the writer convoys behind it. 0.5 ms slices measured 1.5x
        # faster loads here (benchmarks/ingest_bench.py) at no cost to the producer.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, 0.0005))
        self._store = store
        self._report = report
        self._progress = progress
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trailwarden-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        if batch.table is None:
            batch.seal()
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Commit what is pending and wait for the writer; re-raise its error if it failed."""
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch_interval)
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop after the transaction in flight; batches not yet committed are dropped whole."""
        self._error = self._error or _Aborted()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch_interval)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        group: list[Batch] = []
        rows = 0
        while (batch := self._queue.get()) is not None:
            group.append(batch)
            rows += batch.count + len(batch.bad)
            if rows >= self.group_rows:
                self._commit(group)
                group, rows = [], 0
        self._commit(group)

    def _commit(self, group: list[Batch]) -> None:
        if not group or self._error is not None:
            return
        try:
            news = write_batches(self._store, group)
        except BaseException as exc:  # surfaced to the producer on its next call
            self._error = exc
            return
        for batch, new in zip(group, news, strict=True):
            self._report.add_batch(batch, new)
            batch.table = None  # committed: let the memory go now, not at the next GC
            if self._progress and batch.progress:
                self._progress(batch.progress)


class _Aborted(Exception):
    pass


def write_batches(store: Store, batches: list[Batch]) -> list[int]:
    """One transaction: the batches' events, quarantine, partition state and finished files.

    Single-row statements cost about a millisecond each in DuckDB, so state is written once per
    partition and files in one statement, not once per batch.
    """
    for batch in batches:
        if batch.table is None:
            batch.seal()
    states: dict[tuple[str, str], list[Any]] = {}
    bad: dict[str, list[tuple[str, str, str]]] = {}
    finished: list[FileRecord] = []
    with store.transaction():
        news = store.insert_events([b.table for b in batches if b.table is not None])
        for batch, new in zip(batches, news, strict=True):
            bad.setdefault(batch.source, []).extend(batch.bad)
            state = states.setdefault((batch.source, batch.partition), [None, None, 0])
            state[0] = batch.cursor or state[0]
            state[1] = max(filter(None, (state[1], batch.last)), default=None)
            state[2] += new
            if batch.file:
                batch.file.count(batch, new)
                if batch.closes_file:
                    finished.append(batch.file)
        for source, rows in bad.items():
            store.quarantine(source, rows)
        for (source, partition), (cursor, watermark, new) in states.items():
            store.save_state(source, partition, cursor=cursor, watermark=watermark, new_events=new)
        store.record_files([f.row() for f in finished])
    return news


def to_batches(items: Iterable[files.Item], source: str, partition: str, attribute: Attributor,
               size: int = BATCH_SIZE) -> Iterator[Batch]:
    """Normalize items into batches of at most ``size`` events (quarantined ones ride along)."""
    batch = Batch(source, partition)
    for item in items:
        if item.error is not None:
            batch.bad.append((item.location, item.error, item.raw))
        else:
            try:
                event = normalize(item.value, item.raw)
            except MalformedEvent as exc:
                batch.bad.append((item.location, str(exc), item.raw))
            else:
                batch.events.append(event)
                batch.agents.append(attribute(event.identity, event.access_key_id))
        if len(batch.events) + len(batch.bad) >= size:
            yield batch
            batch = Batch(source, partition)
    yield batch


def ingest_files(store: Store, paths: Iterable[str | Path], attribute: Attributor, *,
                 source: str = "files", progress: Callable[[int], None] | None = None,
                 batch_size: int = BATCH_SIZE, workers: int | None = None) -> IngestReport:
    """Ingest files and directories. Files whose content was ingested before are skipped.

    Large uncompressed NDJSON files are parsed by a pool of ``workers`` processes (default: one
    per core) while this process writes; everything else is parsed here.
    """
    found = files.find_files(paths)
    report = IngestReport()
    writer = BatchWriter(store, report, progress)
    seen = store.ingested_file_hashes()
    with ParsePool(attribute, batch_size, workers) as pool:
        try:
            for path in found:
                scan = files.scan_file(path)
                if scan.sha256 in seen:
                    report.skipped_files += 1
                    if progress:
                        progress(scan.size)
                    continue
                seen.add(scan.sha256)
                report.files += 1
                record = FileRecord(path, scan.sha256, scan.size, source)
                if scan.size >= PARALLEL_MIN_BYTES and files.is_ndjson(path):
                    batches = pool.parse(path, scan.chunks, source, FILES_PARTITION)
                else:
                    batches = _parse_here(record, attribute, batch_size)
                _submit_file(writer, record, batches)
        except BaseException:
            writer.abort()
            raise
    writer.close()
    return report


@dataclass
class FileRecord:
    """One file's totals, accumulated batch by batch on the writer thread."""

    path: Path
    sha256: str
    size: int
    source: str
    events: int = 0
    new: int = 0
    quarantined: int = 0

    def count(self, batch: Batch, new: int) -> None:
        self.events += batch.count
        self.new += new
        self.quarantined += len(batch.bad)

    def row(self) -> tuple[Any, ...]:
        return (self.sha256, self.source, str(self.path), self.size, self.events, self.new,
                self.events - self.new, self.quarantined)


def _submit_file(writer: BatchWriter, record: FileRecord, batches: Iterable[Batch]) -> None:
    """Submit a file's batches; the last one also records the file as done."""
    pending: Batch | None = None
    reported = 0
    for batch in batches:
        batch.file = record
        if pending is not None:
            writer.submit(pending)
        reported += batch.progress
        pending = batch
    assert pending is not None  # every parse yields at least one (possibly empty) batch
    pending.progress += record.size - reported  # read-ahead and gzip trailers end here
    pending.closes_file = True
    writer.submit(pending)


def _parse_here(record: FileRecord, attribute: Attributor, batch_size: int) -> Iterator[Batch]:
    stream, counter = files.open_events_file(record.path)
    with stream:
        items = files.read_items(record.path, stream)
        done = 0
        for batch in to_batches(items, record.source, FILES_PARTITION, attribute, batch_size):
            batch.progress, done = counter.count - done, counter.count
            yield batch
