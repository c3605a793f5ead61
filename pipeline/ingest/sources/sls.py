"""ActionTrail from an SLS logstore (``actiontrail_<trail>``), with ``aliyun-log-python-sdk``.

A direct cursor loop, not the consumer-group library (which can skip a batch after an error, and
jumps to the END on an invalid cursor: ../shared/notes/actiontrail.md section 5). Every run lists
the shards (splits and merges create new ones; parents turn read-only), and per shard pulls from
the stored cursor - a new shard starts at the beginning, or at the configured ``start_time`` -
until an empty pull or ``max_batches``. Each batch's events are committed in one transaction with
the shard's next cursor, so a kill -9 loses nothing and a re-run doubles nothing (events are
deduplicated by ``eventId``). Each log's ``event`` content is the ActionTrail JSON; ``__topic__``
is ignored. With ``TRAILWARDEN_INGEST_PARSER=duckdb`` a batch's ``event`` texts are parsed by
DuckDB with the statements that parse a file's lines (:meth:`NativeReader.texts`); the logs SQL
cannot decide go through the same Python rule (:func:`_parsed`), so the rows, the quarantine and
the batches (and so the cursors committed with them) are the same whichever parser ran.

Faults: an expired cursor re-seeks by receive time from a little before the newest event already
stored and records the possible gap in the run; quota and busy errors back off and retry; bad
credentials stop the run with one line. The SDK itself retries 5xx ten times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
from aliyun.log import LogClient, LogException

from models.inventory import Attributor
from pipeline.core.config import SlsSource
from pipeline.core.errors import TerminalError, TrailwardenError, TransientError
from pipeline.core.retry import Stopped, call_with_retries, exponential, not_now
from pipeline.ingest import jsontext
from pipeline.ingest.batches import Batch, to_batches
from pipeline.ingest.native import LineOrigin, NativeReader, native_enabled
from pipeline.ingest.sources.credentials import Credentials
from pipeline.ingest.sources.files import EXCERPT_BYTES, MAX_ITEM_BYTES, Item
from pipeline.store.store import Store

log = logging.getLogger(__name__)
RESEEK_MARGIN = timedelta(hours=1)  # re-read this much before the newest stored event
_AUTH_CODES = ("Unauthorized", "InvalidAccessKeyId", "SignatureNotMatch", "InvalidAccessKeyId.NotFound",
               "SecurityToken.Expired", "SecurityTokenExpired", "ProjectForbidden", "Forbidden")
_BUSY_CODES = ("ReadQuotaExceed", "ServerBusy", "QuotaExceed", "ExceedQuota", "RequestTimeout",
               "InternalServerError", "ShardReadQuotaExceed")


@dataclass
class ShardReport:
    batches: int = 0
    logs: int = 0
    drained: bool = False
    gap_from: str | None = None  # set when an expired cursor forced a re-seek (receive time)


@dataclass
class SlsReport:
    shards: dict[int, ShardReport] = field(default_factory=dict)
    stopped: bool = False  # asked to stop: ended at a pull boundary, the rest comes next run

    @property
    def gaps(self) -> list[str]:
        return [f"shard {s}: re-seeked from {r.gap_from}" for s, r in self.shards.items() if r.gap_from]


def client_for(cfg: SlsSource, creds: Credentials) -> LogClient:
    """A LogClient over HTTPS unless the endpoint spells ``http://`` (tests, proxies); and an IP-literal host gets
    the SDK's raw-IP mode (else it would prefix the project as a DNS name: notes section 4.1)."""
    endpoint = cfg.endpoint if "://" in cfg.endpoint else f"https://{cfg.endpoint}"  # never plain by default
    client = LogClient(endpoint, creds.access_key_id, creds.access_key_secret, creds.security_token or None,
                       source="trailwarden")
    host = urlparse(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""
    if _is_ip(host):
        client._isRowIp = True  # type: ignore[attr-defined]  # the SDK's own switch (notes section 4.1)
    client.timeout = 30
    return client


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SlsReader:
    """Pulls every shard of one logstore into batches for the writer (``pipeline.ingest.run``)."""

    def __init__(self, cfg: SlsSource, client: LogClient, store: Store, *,
                 sleep: Callable[[float], None] = time.sleep, backoff: float = 1.0, retries: int = 5,
                 stop: Callable[[], bool] | None = None, now: datetime | None = None):
        self.cfg = cfg
        self.client = client
        self.store = store
        self.report = SlsReport()
        self._sleep = sleep
        self._backoff = backoff
        self._retries = retries
        self._received: dict[int, int] = {}  # per shard: receive time of the last pull read this run
        self._stop = stop or (lambda: False)
        self._now = now  # what event times "in the future" are measured from (default: each shard's start)

    def partition(self, shard: int) -> str:
        return f"{self.cfg.project}/{self.cfg.logstore}/{shard}"

    def batches(self, attribute: Attributor, batch_size: int) -> Iterator[Batch]:
        """Every shard's batches; with DuckDB parsing (``native_enabled``) on a cursor of the
        reader's own connection, closed when the batches end."""
        native = NativeReader(self.store.con, attribute) if native_enabled("sls") else None
        try:
            yield from self._shards(attribute, batch_size, native)
        finally:
            if native is not None:
                native.close()

    def _shards(self, attribute: Attributor, batch_size: int, native: NativeReader | None) -> Iterator[Batch]:
        try:
            shards = self._call(self.client.list_shards, self.cfg.project, self.cfg.logstore).get_shards_info()
        except Stopped:  # asked to stop during a back-off: end the shard at the last pull handed over
            return
        for shard in sorted(shards, key=lambda s: int(s["shardID"])):
            shard_id, status = int(shard["shardID"]), str(shard.get("status", "readwrite"))
            if status == "readonly" and self.store.read_state(self._drained_key(shard_id)):
                continue
            if self._stopping():
                return
            try:
                yield from self._shard(shard_id, status, attribute, batch_size, native)
            except TrailwardenError as exc:  # status shows the error on the shard that hit it
                exc.partition = self.partition(shard_id)
                raise

    def _drained_key(self, shard: int) -> str:
        return f"sls.drained:{self.cfg.name}/{self.partition(shard)}"

    def _received_key(self, shard: int) -> str:
        return f"sls.received:{self.cfg.name}/{self.partition(shard)}"

    def _shard(self, shard: int, status: str, attribute: Attributor, batch_size: int,
               native: NativeReader | None) -> Iterator[Batch]:
        """The shard's pulls as one stream of batches of ``batch_size`` logs. Each batch carries
        the cursor after the last pull whose events are all in it or before it, so whatever
        commits, commits with a resume point that re-reads at most one pull."""
        report = self.report.shards.setdefault(shard, ShardReport())
        read = _ShardProgress()

        def logs() -> Iterator[Item]:
            try:
                cursor = self._start_cursor(shard)
            except Stopped:  # asked to stop during a back-off: end the shard at the last pull handed over
                return
            for _ in range(self.cfg.max_batches):
                if self._stopping():  # the batch in hand commits with the cursor of the pulls it holds
                    return
                try:
                    response, cursor = self._pull(shard, cursor, report)
                except Stopped:  # asked to stop during a back-off: end the shard at the last pull handed over
                    return
                if response.get_loggroup_count() == 0:
                    read.drained = True
                    return
                next_cursor = response.get_next_cursor() or cursor
                # every unread group was received at or after this pull's first one: where a
                # re-seek starts should the stored cursor expire (receive time, as get_cursor counts)
                received = self._cursor_time(shard, cursor)
                report.batches += 1
                for item in _logs(response, shard, cursor):
                    report.logs += 1
                    yield item
                read.cursor, read.received = next_cursor, received  # this pull is all handed over
                cursor = next_cursor

        partition, now = self.partition(shard), self._now or datetime.now(UTC)
        if native is None:
            batches = to_batches(map(_parsed, logs()), self.cfg.name, partition, attribute, batch_size, now)
        else:
            batches = _native_batches(native, logs(), self.cfg.name, partition, batch_size, now)
        for batch in batches:
            batch.cursor = read.cursor
            if read.received is not None:
                self._received[shard] = read.received
                batch.state[self._received_key(shard)] = str(read.received)
            if read.drained:  # only the last batch comes after the empty pull
                report.drained = True
                if status == "readonly":  # a split's or merge's parent: finished for good, with
                    batch.state[self._drained_key(shard)] = datetime.now(UTC).isoformat()  # its last events
            yield batch

    def _stopping(self) -> bool:
        if self._stop():
            self.report.stopped = True
        return self.report.stopped

    def _start_cursor(self, shard: int) -> str:
        state = self.store.get_state(self.cfg.name, self.partition(shard))
        if state and state[0]:
            return state[0]
        start = "begin" if self.cfg.start_time is None else str(int(self.cfg.start_time.timestamp()))
        return str(self._call(self.client.get_cursor, self.cfg.project, self.cfg.logstore, shard, start).get_cursor())

    def _cursor_time(self, shard: int, cursor: str) -> int | None:
        try:
            response = self._call(self.client.get_cursor_time, self.cfg.project, self.cfg.logstore, shard, cursor)
            return int(response.get_cursor_time())
        except (_InvalidCursor, TypeError, ValueError):
            return None

    def _pull(self, shard: int, cursor: str, report: ShardReport) -> tuple[Any, str]:
        try:
            return self._call(self.client.pull_logs, self.cfg.project, self.cfg.logstore, shard, cursor,
                              count=self.cfg.batch_size), cursor
        except _InvalidCursor:
            cursor, report.gap_from = self._reseek(shard)
            return self._call(self.client.pull_logs, self.cfg.project, self.cfg.logstore, shard, cursor,
                              count=self.cfg.batch_size), cursor

    def _reseek(self, shard: int) -> tuple[str, str]:
        """The stored cursor expired (the logstore's TTL passed it): start again by receive time at
        the last pull read from this shard - never at the end. Without that record (stores from
        before it was kept), an hour before the newest event stored, capped at now, since an
        event's own clock may run ahead."""
        received = self._received.get(shard)
        if received is None:
            stored = self.store.read_state(self._received_key(shard))
            received = int(stored) if stored else None
        if received is not None:
            when = str(received)
        else:
            state = self.store.get_state(self.cfg.name, self.partition(shard))
            watermark = state[1] if state else None
            when = str(int((min(watermark, datetime.now(UTC)) - RESEEK_MARGIN).timestamp())) if watermark else "begin"
        shown = when if when == "begin" else datetime.fromtimestamp(int(when), UTC).isoformat()
        log.warning("sls %s shard %s: cursor expired; re-seeking from %s (possible gap)", self.cfg.name, shard, shown)
        cursor = str(self._call(self.client.get_cursor, self.cfg.project, self.cfg.logstore, shard, when).get_cursor())
        return cursor, shown

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call_with_retries(lambda: method(*args, **kwargs), classify=self._classify, retries=self._retries,
                                 wait=exponential(self._backoff, cap=float("inf")), sleep=self._sleep,
                                 stop=self._stopping)

    def _classify(self, exc: Exception) -> TrailwardenError:
        """What an SLS failure means: busy (retried), unreachable (the next run resumes), or
        something to fix (credentials, project, logstore). An invalid cursor is re-seeked."""
        if isinstance(exc, ConnectionError | OSError):
            return not_now(TransientError(f"SLS is unreachable ({type(exc).__name__}); the next run resumes "
                                        "from the stored cursor"))
        if not isinstance(exc, LogException):
            raise exc
        code, message, status = exc.get_error_code(), exc.get_error_message(), exc.get_resp_status()
        if code == "LogRequestError":  # the SDK's wrapper for a failed connection (after its retries)
            return not_now(TransientError(f"SLS is unreachable at {self.cfg.endpoint} ({message[:200]}); the "
                                        "next run resumes from the stored cursor"))
        if "InvalidCursor" in code or ("cursor" in message.lower() and "invalid" in message.lower()):
            raise _InvalidCursor(message) from None
        if code in _AUTH_CODES or status in (401,):
            return TerminalError(f"SLS rejected the credentials ({code}): check ALIBABA_CLOUD_ACCESS_KEY_ID, "
                                 "ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN)")
        if code in ("ProjectNotExist", "LogStoreNotExist"):
            return TerminalError(f"SLS says {code}: check `project` and `logstore` of source "
                                 f"{self.cfg.name!r} in the config")
        if code not in _BUSY_CODES and status < 500 and status != 403:
            return TerminalError(f"SLS refused the request ({code}: {message})")
        return TransientError(f"SLS stayed busy ({code}) after {self._retries} retries; "
                              "the next run resumes from the stored cursor")


class _InvalidCursor(Exception):
    pass


@dataclass
class _ShardProgress:
    cursor: str | None = None  # after the last pull handed over whole
    received: int | None = None  # that pull's receive time
    drained: bool = False  # an empty pull ended the shard


def _logs(response: Any, shard: int, cursor: str) -> Iterator[Item]:
    """Each log of a pull, not parsed yet: its ``event`` content in ``raw``; or, with the
    quarantine's reason in ``error``, a log without one, with one longer than the files' item
    limit (an excerpt in ``raw``), or with one that is not UTF-8 (the SDK hands such a content
    over as bytes; it used to end the run with a TypeError, and every later run at the same log)."""
    for g, group in enumerate(response.get_loggroup_list().LogGroups):
        for i, entry in enumerate(group.Logs):
            location = f"shard {shard} cursor {cursor} group {g} log {i}"
            text = next((c.Value for c in entry.Contents if c.Key in _EVENT_KEYS), None)
            if text is None:
                keys = ",".join(_shown(c.Key) for c in entry.Contents)[:200]
                yield Item(location, None, keys, "no `event` content in the log (keys: " + keys + ")")
                continue
            if len(text) > MAX_ITEM_BYTES:
                unit = "bytes" if isinstance(text, bytes) else "characters"
                yield Item(location, None, _shown(text[:EXCERPT_BYTES]),
                           f"event of {len(text):,} {unit} is over the {MAX_ITEM_BYTES >> 20} MiB limit: not "
                           f"stored whole; its first {EXCERPT_BYTES:,} are kept here")
                continue
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    yield Item(location, None, _shown(text), "not valid UTF-8")
                    continue
            yield Item(location, None, text)


_EVENT_KEYS = ("event", b"event")  # the SDK's raw LogGroups (its fallback parse) hold bytes


def _shown(value: str | bytes) -> str:
    """A content's key or value as text: bytes that are not UTF-8 with replacement characters."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _parsed(log: Item) -> Item:
    """The Python rule for one log from :func:`_logs`: its ``event`` parsed; bad JSON
    (malformed, too deep, a duplicate key) is quarantined with the reason."""
    if log.error is not None:
        return log
    try:
        return Item(log.location, jsontext.loads(log.raw), log.raw)
    except jsontext.BadJson as exc:
        return Item(log.location, None, log.raw, str(exc))


def _native_batches(native: NativeReader, logs: Iterator[Item], source: str, partition: str,
                    size: int, now: datetime) -> Iterator[Batch]:
    """What ``to_batches(map(_parsed, logs), ...)`` yields - a batch every ``size`` logs without
    reading a log ahead, then the rest (an empty batch when the logs end on a boundary), so the
    same cursors commit with the same logs - with DuckDB parsing each batch's ``event`` texts.
    A log SQL does not decide (and one with nothing to parse) goes through :func:`_parsed`."""
    native.now = now
    while True:
        chunk = list(islice(logs, size))
        texts = [None if log.error is not None else log.raw for log in chunk]
        yield native.texts(texts, _origin(chunk), source, partition)
        if len(chunk) < size:
            return


def _origin(chunk: list[Item]) -> LineOrigin:
    """A batch's logs as the native reader's lines: line ``n`` is ``chunk[n]``."""
    locations = pa.array([log.location for log in chunk], pa.string())

    def items(line_no: int, _text: str | None) -> Iterable[Item]:
        return (_parsed(chunk[line_no]),)

    return LineOrigin(lambda numbers: locations.take(numbers), items)
