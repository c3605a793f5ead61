"""Where events come from: files (OSS dumps, exports), an SLS logstore, the LookupEvents API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pipeline.core.config import LookupEventsSource, SlsSource
from pipeline.store.store import Store


def reader_for(cfg: SlsSource | LookupEventsSource, store: Store, *, since: datetime | None = None,
               stop: Callable[[], bool] | None = None) -> Any:
    """A reader with ``batches(attribute, batch_size)`` and a ``report``, built with credentials
    from the environment; ``stop`` returning true ends its batches at the next pull or page."""
    from pipeline.ingest.sources import credentials

    creds = credentials.from_env()
    # the reader consults source state on this thread while the writer thread inserts; a DuckDB
    # connection refuses a second caller while busy, so the reader gets its own
    store = Store(store.con.cursor(), store.path, read_only=store.read_only)
    if isinstance(cfg, SlsSource):
        from pipeline.ingest.sources import sls

        return sls.SlsReader(cfg, sls.client_for(cfg, creds), store, stop=stop)
    from pipeline.ingest.sources import lookup_events

    return lookup_events.LookupReader(cfg, lookup_events.client_for(cfg, creds), store, since=since, stop=stop)
