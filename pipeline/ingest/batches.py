"""Batches: normalized events on their way to the store, as Arrow tables.

This module imports neither DuckDB nor pandas, so the parse workers stay small.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from models.inventory import Attributor
from pipeline.ingest.events import EVENT_COLUMNS, Event, MalformedEvent, normalize
from pipeline.ingest.jsontext import TOO_DEEP
from pipeline.ingest.sources import files

BATCH_SIZE = 10_000


_JSON_COLUMNS = frozenset({"referenced_resources", "raw"})


def _arrow_type(name: str) -> pa.DataType:
    if name in ("event_time", "session_created"):
        return pa.timestamp("us", tz="UTC")
    if name in ("is_global", "mfa_authenticated", "secure_transport"):
        return pa.bool_()
    if name == "ip_version":
        return pa.int8()
    if name in _JSON_COLUMNS:
        # Arrow's JSON extension type lands in DuckDB's JSON type without a second parse: the
        # normalizer has already parsed (validated) every value.
        return pa.json_()
    return pa.string()


_EVENT_SCHEMA = pa.schema(
    [(name, _arrow_type(name)) for name in EVENT_COLUMNS]
    + [("agent", pa.string()), ("source", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC"))]
)
# Where each event was read (file:line, shard and cursor...): not stored with the event, but named
# in the quarantine should the store find its eventId already taken (Store.insert_events).
LOCATION = "location"
_LOCATED_SCHEMA = _EVENT_SCHEMA.append(pa.field(LOCATION, pa.string()))


def events_to_arrow(events: Sequence[Event], agents: Sequence[str], source: str,
                    ingested_at: datetime, locations: Sequence[str] | None = None) -> pa.Table:
    """The events as the ``events`` table's columns, plus :data:`LOCATION` when given."""
    schema = _EVENT_SCHEMA if locations is None else _LOCATED_SCHEMA
    n = len(events)
    if not n:
        return schema.empty_table()
    columns: list[Any] = [list(col) for col in zip(*events, strict=True)]
    columns += [list(agents), [source] * n, [ingested_at] * n]
    if locations is not None:
        columns.append(list(locations))
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


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
    locations: list[str] = field(default_factory=list)  # where each event was read
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # location, reason, raw
    cursor: str | None = None  # source-specific resume point after this batch
    file: FileRecord | None = None  # the file this batch came from, if any
    closes_file: bool = False  # the file's last batch: record the file as ingested with it
    progress: int = 0  # bytes (or items) this batch advanced
    state: dict[str, str] = field(default_factory=dict)  # pipeline_state values committed with it
    table: pa.Table | None = None
    count: int = 0
    conflicts: int = 0  # events whose eventId was already stored with another eventTime (quarantined)
    first: datetime | None = None
    last: datetime | None = None

    def seal(self) -> Batch:
        if self.events:
            times = [e.event_time for e in self.events]
            self.first, self.last = min(times), max(times)
        self.count = len(self.events)
        self.table = events_to_arrow(self.events, self.agents, self.source, datetime.now(UTC),
                                     self.locations if len(self.locations) == self.count else None)
        self.events, self.agents, self.locations = [], [], []
        return self


def to_batches(items: Iterable[files.Item], source: str, partition: str, attribute: Attributor,
               size: int = BATCH_SIZE, now: datetime | None = None) -> Iterator[Batch]:
    """Normalize items into batches of at most ``size`` events (quarantined ones ride along).

    Each item stands alone: one that cannot become an event (any reason :func:`normalize` gives,
    an event time before 2010 or more than a day after ``now``, nesting too deep to walk) is
    quarantined and the rest go on. ``now`` defaults to the clock when the batches begin."""
    now = now or datetime.now(UTC)
    batch = Batch(source, partition)
    for item in items:
        if item.error is not None:
            batch.bad.append((item.location, item.error, item.raw))
        else:
            try:
                event = normalize(item.value, item.raw, now)
            except MalformedEvent as exc:
                batch.bad.append((item.location, str(exc), item.raw))
            except RecursionError:
                batch.bad.append((item.location, TOO_DEEP, item.raw))
            else:
                batch.events.append(event)
                batch.agents.append(attribute(event.identity, event.access_key_id, event.account_id))
                batch.locations.append(item.location)
        if len(batch.events) + len(batch.bad) >= size:
            yield batch
            batch = Batch(source, partition)
    yield batch


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
        self.quarantined += len(batch.bad) + batch.conflicts

    def row(self) -> tuple[Any, ...]:
        return (self.sha256, self.source, str(self.path), self.size, self.events, self.new,
                self.events - self.new, self.quarantined)
