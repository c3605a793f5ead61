"""ActionTrail from the ``LookupEvents`` API (``alibabacloud-actiontrail20200706``): the last 90
days, no trail needed. Also how a new user backfills: ``trailwarden ingest --source history
--since 30d``.

Each run pages FORWARD through one fixed window, from the stored watermark minus an overlap for
late events (ActionTrail delivers up to ~10 minutes late) to now, with ``NextToken`` (a token is
only valid with the exact same parameters, so the window is fixed for the run). Pages are spaced
to at most two requests a second, as the API asks; throttling backs off. The window's end becomes
the new watermark only with the last page's events, so a crash re-reads the window and ``eventId``
deduplication makes the overlap harmless. Regional: global-service events live in the global
events storage region (``cn-hangzhou`` or ``ap-southeast-1``); configure a source for each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from alibabacloud_actiontrail20200706 import models as at_models
from alibabacloud_actiontrail20200706.client import Client
from alibabacloud_tea_openapi import models as openapi
from Tea.exceptions import RetryError, TeaException, UnretryableException

from models.inventory import Attributor
from pipeline.core.config import LookupEventsSource
from pipeline.core.errors import TerminalError, TrailwardenError, TransientError
from pipeline.core.retry import Stopped, call_with_retries, not_now
from pipeline.core.times import iso_seconds
from pipeline.ingest.batches import Batch, to_batches
from pipeline.ingest.sources.credentials import Credentials
from pipeline.ingest.sources.files import Item, encoded_item
from pipeline.store.store import Store

log = logging.getLogger(__name__)
RETENTION = timedelta(days=90)
OVERLAP = timedelta(minutes=10)
SETTLE = timedelta(minutes=1)  # events of the last minute may still be arriving
PAGE_INTERVAL = 0.5  # at most two requests a second
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature", "Forbidden", "NoPermission",
         "InvalidSecurityToken", "SecurityToken")


def client_for(cfg: LookupEventsSource, creds: Credentials) -> Client:
    config = openapi.Config(access_key_id=creds.access_key_id, access_key_secret=creds.access_key_secret,
                            security_token=creds.security_token, region_id=cfg.region,
                            read_timeout=30_000, connect_timeout=10_000)
    if cfg.endpoint:
        parsed = urlparse(cfg.endpoint if "://" in cfg.endpoint else f"https://{cfg.endpoint}")
        config.endpoint = parsed.netloc
        config.protocol = parsed.scheme  # an http:// endpoint selects plain HTTP (tests, proxies)
    return Client(config)


@dataclass
class LookupReport:
    pages: int = 0
    events: int = 0
    window: tuple[str, str] | None = None
    stopped: bool = False  # asked to stop: ended at a page boundary, the rest comes next run


class LookupReader:
    def __init__(self, cfg: LookupEventsSource, client: Client, store: Store, *, since: datetime | None = None,
                 now: datetime | None = None, sleep: Callable[[float], None] = time.sleep,
                 page_interval: float = PAGE_INTERVAL, retries: int = 5, max_pages: int | None = None,
                 stop: Callable[[], bool] | None = None):
        self.cfg = cfg
        self.client = client
        self.store = store
        self.since = since
        self.now = now or datetime.now(UTC)
        self.report = LookupReport()
        self._sleep = sleep
        self._interval = page_interval
        self._retries = retries
        self._max_pages = cfg.max_pages if max_pages is None else max_pages
        self._stop = stop or (lambda: False)

    @property
    def partition(self) -> str:
        return self.cfg.region

    def window(self) -> tuple[datetime, datetime]:
        end = self.now - SETTLE
        oldest = self.now - RETENTION + timedelta(minutes=5)
        state = self.store.get_state(self.cfg.name, self.partition)
        if self.since is not None:
            start = self.since
        elif state and state[0]:
            start = datetime.fromisoformat(state[0]) - OVERLAP  # the cursor is the last window's end
        else:
            start = end - self.cfg.lookback
        return max(start, oldest), end

    def batches(self, attribute: Attributor, batch_size: int) -> Iterator[Batch]:
        start, end = self.window()
        if start >= end:
            return
        self.report.window = (iso_seconds(start), iso_seconds(end))
        request = at_models.LookupEventsRequest(start_time=iso_seconds(start), end_time=iso_seconds(end), max_results="50",
                                                direction="FORWARD")
        pending: list[Item] = []
        read_to: datetime | None = None  # the newest eventTime among the pages read so far
        for page in range(self._max_pages):
            if page and self._stop():  # as when max_pages is reached: what was read commits
                self.report.stopped = True
                log.info("lookup_events %s: stopped after %s pages; the rest comes next run", self.cfg.name, page)
                yield from self._flush(pending, attribute, batch_size, read_to)
                return
            if page:
                self._sleep(self._interval)
            try:
                body = self._call(request)
            except Stopped:  # asked to stop during a back-off: end the run at the last page read  # asked to stop while throttled: what was read commits
                self.report.stopped = True
                yield from self._flush(pending, attribute, batch_size, read_to)
                return
            self.report.pages += 1
            events = body.events or []
            self.report.events += len(events)
            # each event alone: one that cannot be re-encoded (too deep, too long) is quarantined
            pending.extend(encoded_item(f"{self.cfg.region} page {page} #{i}", ev) for i, ev in enumerate(events))
            if not body.next_token:
                break
            request.next_token = body.next_token
            if len(pending) >= batch_size:
                read_to = yield from self._flush(pending, attribute, batch_size, read_to)
                pending = []
        else:
            # Not finished: FORWARD pages come oldest first, so the next run restarts (less the
            # overlap) from the newest event read - windows larger than max_pages complete
            # over several runs instead of starting over each time.
            log.warning("lookup_events %s: stopped after %s pages; the rest comes next run", self.cfg.name, self._max_pages)
            yield from self._flush(pending, attribute, batch_size, read_to)
            return
        yield from self._flush(pending, attribute, batch_size, read_to, end=end)  # the whole window is in

    def _flush(self, items: list[Item], attribute: Attributor, batch_size: int, read_to: datetime | None,
               end: datetime | None = None) -> Generator[Batch, None, datetime | None]:
        """Batches of whole pages; the last one carries how far the window has been read."""
        batches = [b.seal() for b in to_batches(items, self.cfg.name, self.partition, attribute, batch_size, self.now)]
        if len(batches) > 1 and batches[-1].count == 0 and not batches[-1].bad:
            batches.pop()  # to_batches' empty tail: the mark rides with the last events instead
        for batch in batches:
            if batch.last is not None:
                read_to = max(read_to or batch.last, batch.last)
        mark = end or read_to
        if mark is not None:
            batches[-1].cursor = iso_seconds(mark)
        yield from batches
        return read_to

    def _call(self, request: Any) -> Any:
        return call_with_retries(lambda: self.client.lookup_events(request).body, classify=self._classify,
                                 retries=self._retries, wait=self._wait, sleep=self._sleep, stop=self._stop)

    def _classify(self, exc: Exception) -> TrailwardenError:
        """What a LookupEvents failure means: throttled or busy (retried, honouring retry-after),
        unreachable (the next run resumes), or something to fix (credentials, permission)."""
        if isinstance(exc, RetryError | ConnectionError | OSError):
            return not_now(TransientError(f"ActionTrail is unreachable ({type(exc).__name__}); the next run resumes"))
        if not isinstance(exc, TeaException):
            raise exc
        inner = getattr(exc, "inner_exception", None)
        if isinstance(exc, UnretryableException) and not isinstance(inner, TeaException):
            # the Tea runtime's wrapper for a connection that failed (RetryError, socket errors)
            return not_now(TransientError(f"ActionTrail is unreachable at {self.cfg.endpoint or self.cfg.region} "
                                        f"({type(inner).__name__}); the next run resumes"))
        code = str(getattr(exc, "code", "") or "")
        status = int(getattr(exc, "status_code", 0) or getattr(exc, "statusCode", 0) or 0)
        if code.startswith(_AUTH) or status in (401, 403) and not code.startswith("Throttling"):
            return TerminalError(
                f"ActionTrail rejected the credentials ({code}): check ALIBABA_CLOUD_ACCESS_KEY_ID, "
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET and the RAM permission actiontrail:LookupEvents")
        retry_after = getattr(exc, "retry_after", None)
        transient = code.startswith(("Throttling", "ServiceUnavailable", "InternalError")) or status >= 500 \
            or retry_after is not None
        if not transient:
            return TerminalError(f"ActionTrail refused LookupEvents ({code}: {getattr(exc, 'message', '')})")
        error = TransientError(f"ActionTrail kept throttling ({code}); the next run resumes")
        error.retry_after = retry_after  # type: ignore[attr-defined]
        return error

    def _wait(self, error: TrailwardenError, attempt: int) -> float:
        """Retry-after when the API says it (milliseconds), else a doubling back-off; never more
        than two requests a second."""
        retry_after = getattr(error, "retry_after", None)
        wait = float(retry_after) / 1000 if retry_after else self._interval * 2 ** (attempt + 1)
        return max(wait, self._interval)


