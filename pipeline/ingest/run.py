"""Items from a source -> typed events -> the store, exactly once in effect.

Parsing runs in the calling thread while a writer thread commits the previous batch, so Python's
JSON work and DuckDB's insert overlap on two cores. Each batch is one transaction holding its
events, its quarantined input and the source state that covers it; a file's "done" record is
written with its last batch. A kill -9 therefore loses at most uncommitted work, and the retry
skips what was committed (files by content hash, events by ``eventId``).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from models.inventory import Attributor
from pipeline.core.config import Config
from pipeline.core.errors import TerminalError, TrailwardenError
from pipeline.ingest.batches import BATCH_SIZE, Batch, FileRecord, to_batches
from pipeline.ingest.native import ROW_GROUP_ROWS, NativeReader, native_eligible, native_enabled
from pipeline.ingest.parse_pool import ParsePool
from pipeline.ingest.sources import files
from pipeline.store.store import Store, first_row

log = logging.getLogger(__name__)
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
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped, not recorded

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v not in (None, {}) and k != "unreadable"}
        if self.unreadable:
            out["skipped_unreadable"] = len(self.unreadable)
            out["unreadable"] = [{"path": p, "error": e} for p, e in self.unreadable]
        return out

    def add_batch(self, batch: Batch, new: int) -> None:
        self.events += batch.count
        self.new += new
        self.duplicates += batch.count - new  # conflicting copies too: they are also quarantined
        self.quarantined += len(batch.bad) + batch.conflicts
        if batch.first and batch.last:
            self.first_event = min(self.first_event or batch.first, batch.first)
            self.last_event = max(self.last_event or batch.last, batch.last)


class BatchWriter:
    """Writes batches on a background thread, a few batches per transaction.

    Each batch is inserted as soon as it arrives, into a transaction left open until it holds
    ``group_rows`` rows, until no batch has come for ``idle_commit`` seconds, or until the end.
    Inserting on arrival keeps only the batch in flight in Python's memory; ``submit`` blocks
    while two batches wait. Measured on 1M events (benchmarks/): 40,960-row transactions load as
    fast as 122,880-row ones (a full DuckDB row group) with DuckDB on one thread, and peak 200 MiB
    lower.
    """

    group_rows = 40_960
    # With DuckDB parsing (no parse workers, so memory to spare): a transaction of at least a
    # DuckDB row group (122,880 rows) has its row groups compressed and written straight to the
    # file as they fill, and only their address goes to the WAL at COMMIT; a smaller one writes
    # every row to the WAL and the checkpoint compresses them again later. Measured at 200k
    # events: the insert and commit cost 7.5 us per event instead of 14.4, and the peak ~150 MiB
    # more (README, Performance), which the Python parser's three processes cannot afford.
    native_group_rows = ROW_GROUP_ROWS
    idle_commit = 1.0

    def __init__(self, store: Store, report: IngestReport, progress: Callable[[int], None] | None,
                 native: bool = False):
        # DuckDB takes the GIL briefly for each Arrow chunk it scans; with the producer holding it
        # for the default 5 ms slices, the writer convoys behind it. 0.5 ms slices measured 1.5x
        # faster loads here (benchmarks/ingest_bench.py) at no cost to the producer.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, 0.0005))
        self._store = store
        self._rows = self.native_group_rows if native else self.group_rows
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
        """Stop now: the open transaction is rolled back, waiting batches are dropped whole."""
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
        tx: Transaction | None = None
        while True:
            try:
                batch = self._queue.get(timeout=self.idle_commit if tx else None)
            except queue.Empty:  # idle: make what we have durable now
                self._commit(tx)
                tx = None
                continue
            if batch is None:
                break
            if self._error is not None:
                continue
            try:
                tx = tx or Transaction(self._store)
                tx.add(batch)
            except BaseException as exc:  # surfaced to the producer on its next call
                self._error = exc
                _rollback(tx)
                tx = None
                continue
            if tx.rows >= self._rows:
                self._commit(tx)
                tx = None
        if self._error is not None:
            _rollback(tx)
        else:
            self._commit(tx)

    def _commit(self, tx: Transaction | None) -> None:
        if tx is None:
            return
        try:
            done = tx.commit()
        except BaseException as exc:
            self._error = exc
            _rollback(tx)
            return
        for batch, new in done:
            self._report.add_batch(batch, new)
            if self._progress and batch.progress:
                self._progress(batch.progress)


class _Aborted(Exception):
    pass


def _rollback(tx: Transaction | None) -> None:
    if tx is not None:
        tx.rollback()


class Transaction:
    """An open store transaction collecting batches: their events and quarantined input go in
    as they come; the check of the new eventIds against the whole store, partition state and
    finished files are done once, just before COMMIT (single-row statements cost about a
    millisecond each in DuckDB, and the whole-store check a scan of every stored eventId)."""

    def __init__(self, store: Store):
        self.store = store
        self.rows = 0
        self._done: list[tuple[Batch, int]] = []
        self._kept: list[pa.Table] = []  # per batch: the events it stored (for the conflict check)
        self._named: dict[str, str] = {}
        store.begin()

    def add(self, batch: Batch) -> None:
        if batch.table is None:
            batch.seal()
        assert batch.table is not None
        [inserted] = self.store.store_events([batch.table])
        self.store.quarantine(batch.source, batch.bad)
        batch.conflicts += inserted.conflicts
        self._kept.append(inserted.kept)
        self._named.update(batch.state)
        batch.table = None  # in DuckDB's hands now: let Python's copy go
        self.rows += batch.count + len(batch.bad)
        self._done.append((batch, inserted.new))

    def commit(self) -> list[tuple[Batch, int]]:
        done = self._without_conflicts()
        states: dict[tuple[str, str], list[Any]] = {}
        finished: list[FileRecord] = []
        for batch, new in done:
            state = states.setdefault((batch.source, batch.partition), [None, None, 0])
            state[0] = batch.cursor or state[0]
            state[1] = max(filter(None, (state[1], batch.last)), default=None)
            state[2] += new
            if batch.file:
                batch.file.count(batch, new)
                if batch.closes_file:
                    finished.append(batch.file)
        for (source, partition), (cursor, watermark, new) in states.items():
            self.store.save_state(source, partition, cursor=cursor, watermark=watermark, new_events=new)
        self.store.record_files([f.row() for f in finished])
        for name, value in self._named.items():
            self.store.write_state(name, value)
        self.store.commit()
        return done

    def _without_conflicts(self) -> list[tuple[Batch, int]]:
        """The batches with their new counts, after taking back (and quarantining) any new event
        whose eventId the store already held with an eventTime more than a day away."""
        removed = self.store.remove_conflicts(pa.concat_tables(self._kept)) if self._kept else []
        if not removed:
            return self._done
        ends = np.cumsum([t.num_rows for t in self._kept])
        lost = np.bincount(np.searchsorted(ends, removed, side="right"), minlength=len(self._done))
        for (batch, _), n in zip(self._done, lost, strict=True):
            batch.conflicts += int(n)
        return [(batch, new - int(n)) for (batch, new), n in zip(self._done, lost, strict=True)]

    def rollback(self) -> None:
        self.store.rollback()


def write_batches(store: Store, batches: list[Batch]) -> list[int]:
    """Write batches in one transaction (what the writer thread does, without the thread)."""
    tx = Transaction(store)
    try:
        for batch in batches:
            tx.add(batch)
        return [new for _, new in tx.commit()]
    except BaseException:
        tx.rollback()
        raise


def ingest_files(store: Store, paths: Iterable[str | Path], attribute: Attributor, *,
                 source: str = "files", progress: Callable[[int], None] | None = None,
                 batch_size: int = BATCH_SIZE, workers: int | None = None,
                 stop: Callable[[], bool] | None = None, now: datetime | None = None) -> IngestReport:
    """Ingest files and directories. Files whose content was ingested before are skipped.

    Large uncompressed NDJSON files are parsed by a pool of ``workers`` processes (default: one
    per core) while this process writes; everything else is parsed here. ``stop`` returning true
    ends the ingest before the next file (what was read is committed; the rest comes next time).
    ``now`` is what event times "in the future" are measured from (default: the clock).

    A file or folder that cannot be read (no permission, vanished, an I/O error) is skipped with
    a warning and listed in the report's ``unreadable``; the other files are stored. It is not
    recorded as ingested, so the next run reads it (and only it) again.
    """
    unreadable: list[tuple[str, str]] = []
    found = files.find_files(paths, unreadable)
    report = IngestReport()
    for path, reason in unreadable:
        _warn_unreadable(report, path, reason)
    with _bulk_load_settings(store):
        _ingest_found(store, found, attribute, report, source, progress, batch_size, workers, stop, now)
    return report


class UnreadableFiles(TerminalError):
    """Files or folders of a files source could not be read; the rest was ingested."""


def unreadable_error(report: IngestReport) -> UnreadableFiles:
    """One line for the files a run had to skip: the first of them, and how many more."""
    path, reason = report.unreadable[0]
    more = len(report.unreadable) - 1
    also = f" (and {more} more: see the run's counts)" if more else ""
    return UnreadableFiles(f"{len(report.unreadable)} file(s) or folder(s) could not be read and were skipped: "
                           f"{_shown(path)}: {reason}{also}; the rest was stored - fix the access and "
                           "re-run, which reads only what was skipped")


def _warn_unreadable(report: IngestReport, path: str, reason: str) -> None:
    report.unreadable.append((path, reason))
    log.warning("cannot read %s: %s; skipped (the other files go on, a re-run reads it again)", _shown(path), reason)


def _shown(path: str) -> str:
    """A path as it may be printed: quoted and escaped when it holds control or format
    characters (a hostile file name must not rewrite the terminal)."""
    return path if path.isprintable() else ascii(path)


def ingest_batches(store: Store, batches: Iterable[Batch], *,
                   progress: Callable[[int], None] | None = None) -> IngestReport:
    """Write batches from any reader (SLS, LookupEvents) through the same writer as files."""
    report = IngestReport()
    with _bulk_load_settings(store):
        writer = BatchWriter(store, report, progress)
        try:
            for batch in batches:
                writer.submit(batch)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return report


@contextmanager
def _bulk_load_settings(store: Store) -> Iterator[None]:
    """For the length of an ingest: DuckDB on one thread (the parsers need the other core; the
    insert ran faster so than on two threads competing with them), and checkpoints every 256 MB
    of WAL instead of 16 MB (a checkpoint per commit cost half the load time). Both measured with
    benchmarks/ingest_bench.py; both restored afterwards."""
    saved = first_row(store.con.execute(
        "SELECT current_setting('threads'), current_setting('checkpoint_threshold')"))
    store.con.execute("SET threads = 1")
    store.con.execute("SET checkpoint_threshold = '256MB'")
    try:
        yield
    finally:
        if saved:
            store.con.execute(f"SET threads = {int(saved[0])}")
            store.con.execute("SET checkpoint_threshold = ?", [str(saved[1])])


def _ingest_found(store: Store, found: list[Path], attribute: Attributor, report: IngestReport,
                  source: str, progress: Callable[[int], None] | None, batch_size: int,
                  workers: int | None, stop: Callable[[], bool] | None = None,
                  now: datetime | None = None) -> None:
    native = NativeReader(store.con, attribute, now) if native_enabled() else None
    writer = BatchWriter(store, report, progress, native=native is not None)
    seen = store.ingested_file_hashes()
    with ParsePool(attribute, batch_size, workers, now) as pool:
        try:
            for path in found:
                if stop is not None and stop():
                    break
                try:
                    _ingest_file(writer, pool, native, path, seen, report, attribute, batch_size, source,
                                 progress, now)
                except _ReadFailed as exc:
                    _warn_unreadable(report, str(path), exc.reason)
        except BaseException:
            writer.abort()
            raise
        finally:
            if native is not None:
                native.close()
    writer.close()


class _ReadFailed(Exception):
    """Reading a file failed (an ``OSError``): the file is skipped, the ingest goes on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _ingest_file(writer: BatchWriter, pool: ParsePool, native: NativeReader | None, path: Path, seen: set[str],
                 report: IngestReport, attribute: Attributor, batch_size: int, source: str,
                 progress: Callable[[int], None] | None, now: datetime | None) -> None:
    """Submit one file's batches, unless its content was ingested before. An ``OSError`` while
    reading it becomes :class:`_ReadFailed`: batches already submitted are kept (their events
    are found stored on the retry), the file is not recorded, so the retry reads it again.

    Uncompressed UTF-8 NDJSON is parsed by DuckDB (:mod:`pipeline.ingest.native`) unless
    ``TRAILWARDEN_INGEST_PARSER=python``; everything else by the Python readers."""
    try:
        scan = files.scan_file(path)
        if scan.sha256 in seen:
            report.skipped_files += 1
            if progress:
                progress(scan.size)
            return
        in_duckdb = native is not None and native_eligible(path)
        parallel = not in_duckdb and scan.size >= PARALLEL_MIN_BYTES and files.is_ndjson(path)
    except OSError as exc:
        raise _ReadFailed(files.os_reason(exc)) from exc
    record = FileRecord(path, scan.sha256, scan.size, source)
    if in_duckdb:
        assert native is not None
        batches = native.batches(path, scan.chunks, source, FILES_PARTITION, batch_size)
    elif parallel:
        batches = pool.parse(path, scan.chunks, source, FILES_PARTITION)
    else:
        batches = _parse_here(record, attribute, batch_size, now)
    seen.add(scan.sha256)
    report.files += 1
    try:
        _submit_file(writer, record, _reading(batches))
    except _ReadFailed:
        seen.discard(scan.sha256)
        report.files -= 1
        raise


def _reading(batches: Iterable[Batch]) -> Iterator[Batch]:
    """``batches``, with an ``OSError`` raised while reading them turned into :class:`_ReadFailed`
    (an error of the writer, which may also be an ``OSError``, is not one of these)."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except OSError as exc:
            raise _ReadFailed(files.os_reason(exc)) from exc
        yield batch


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


def _parse_here(record: FileRecord, attribute: Attributor, batch_size: int,
                now: datetime | None = None) -> Iterator[Batch]:
    stream, counter = files.open_events_file(record.path)
    with stream:
        items = files.read_items(record.path, stream)
        done = 0
        for batch in to_batches(items, record.source, FILES_PARTITION, attribute, batch_size, now):
            batch.progress, done = counter.count - done, counter.count
            yield batch


@dataclass
class SourceOutcome:
    """One source's part of an ingest run."""

    name: str
    report: IngestReport | None = None
    details: dict[str, Any] = field(default_factory=dict)  # source-specific: pages, gaps, shards
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.report.as_dict() if self.report else {}
        out.update(self.details)
        if self.error:
            out["error"] = self.error
        return out


def ingest_sources(store: Store, targets: Sequence[tuple[str, Any]], attribute: Attributor, *,
                   since: datetime | None = None,
                   progress: Callable[[str, list[str]], Any] | None = None,
                   stop: Callable[[], bool] | None = None) -> list[SourceOutcome]:
    """Ingest each target - ``(name, [paths])`` for files, ``(name, source config)`` otherwise.
    A source that fails is recorded (``ingest_state.last_error``) and the others still run.
    ``stop`` returning true ends the ingest at the next batch boundary (a file, an SLS pull, a
    LookupEvents page): what was read is committed with its cursor, the rest comes next time."""
    from pipeline.ingest.sources import reader_for

    outcomes = []
    for name, target in targets:
        if stop is not None and stop():
            break
        outcome = SourceOutcome(name)
        try:
            if isinstance(target, list):
                with (progress(name, target) if progress else nullcontext(None)) as bar:
                    outcome.report = ingest_files(store, target, attribute, source=name, progress=bar, stop=stop)
                if outcome.report.unreadable:  # the rest is stored; the run still fails, so it is noticed
                    raise unreadable_error(outcome.report)
            else:
                reader = reader_for(target, store, since=since, stop=stop)
                outcome.report = ingest_batches(store, reader.batches(attribute, BATCH_SIZE))
                outcome.details = _reader_details(reader.report)
            store.clear_source_errors(name)
        except TrailwardenError as exc:
            outcome.error = str(exc)
            store.clear_source_errors(name)  # this run's error is the last one
            store.record_source_error(name, exc.partition or "", str(exc))
        outcomes.append(outcome)
    return outcomes


def _reader_details(report: Any) -> dict[str, Any]:
    details = {k: v for k, v in vars(report).items() if k != "shards" and v not in (None, 0, [], {})}
    gaps = getattr(report, "gaps", None)
    if gaps:
        details["possible_gaps"] = gaps
    shards = getattr(report, "shards", None)
    if shards:
        details["shards"] = {str(k): {"batches": v.batches, "logs": v.logs} for k, v in shards.items()}
    return details


def ingest_targets(config: Config, names: Sequence[str] = (), paths: Sequence[str] = (), *,
                   skip_missing: Callable[[str, str], None] | None = None) -> list[tuple[str, Any]]:
    """What an ingest reads: ``("files", [paths])`` for files and folders given, then the named
    sources (every configured one when neither is given), each as ``(name, [path])`` for a files
    source, else ``(name, source config)``. A path given that does not exist is a usage error
    before anything is written; a files source whose folder does not exist (yet) is an error when
    it is read, or, with ``skip_missing(name, path)`` (the service), skipped and reported to it."""
    from pipeline.core.config import FilesSource
    from pipeline.ingest.sources.files import find_files

    if paths:
        find_files(paths)
    targets: list[tuple[str, Any]] = [("files", list(paths))] if paths else []
    chosen = [config.source(n) for n in names] if names else ([] if paths else config.sources)
    for src in chosen:
        if isinstance(src, FilesSource):
            if skip_missing is not None and not Path(src.path).exists():
                skip_missing(src.name, str(src.path))
                continue
            targets.append((src.name, [str(src.path)]))
        else:
            targets.append((src.name, src))
    return targets
