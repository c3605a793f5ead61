"""``trailwarden ram sync``: read the account's RAM state and store it as a new dated snapshot.

Everything is read first and stored in one transaction, so an unreachable endpoint, refused
credentials or a stop request part-way store nothing. Calls that failed for one principal are
stored with the snapshot (``ram_sync_errors``) and make the run fail visibly (exit 1, ``status``
shows them) while the rest of the account is there to review.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.config import Config
from pipeline.core.times import utcnow
from pipeline.ram.client import RamApi, connect
from pipeline.ram.reader import PAGE, Reader
from pipeline.ram.snapshots import known_documents, save_snapshot
from pipeline.store.store import Store


@dataclass
class SyncReport:
    snapshot: int | None = None
    taken_at: Any = None
    users: int = 0
    groups: int = 0
    roles: int = 0
    policies: int = 0
    access_keys: int = 0
    calls: int = 0
    throttled: int = 0
    seconds: float = 0.0
    documents_reused: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None  # set when calls failed: the run is recorded as failed

    @property
    def calls_per_second(self) -> float:
        return round(self.calls / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "calls_per_second": self.calls_per_second}


def ram_sync(store: Store, config: Config, *, api: RamApi | None = None,
             stop: Callable[[], bool] = lambda: False, page: int = PAGE) -> SyncReport:
    """Read RAM (through ``api``, else clients for the config's ``ram.endpoint`` and the
    environment's credentials) and store the snapshot."""
    ram = config.ram
    api = api or connect(ram.endpoint if ram else None, ram.ims_endpoint if ram else None, stop=stop)
    known = known_documents(store)
    started = time.monotonic()
    reader = Reader(api, known, now=utcnow(), page=page)
    snapshot = reader.read()
    seconds = round(time.monotonic() - started, 3)
    sid = save_snapshot(store, snapshot, source="ram", calls=api.calls, seconds=seconds)
    report = SyncReport(
        snapshot=sid, taken_at=snapshot.taken_at, users=len(snapshot.users), groups=len(snapshot.groups),
        roles=len(snapshot.roles), policies=len(snapshot.policies), access_keys=len(snapshot.keys), calls=api.calls,
        throttled=api.throttled, seconds=seconds, documents_reused=reader.reused,
        errors=[{"principal": e.principal, "call": e.call, "code": e.code, "message": e.message} for e in snapshot.errors])
    if snapshot.errors:
        first = snapshot.errors[0]
        report.error = (f"{len(snapshot.errors)} RAM call(s) failed, the rest was read (first: {first.principal} "
                        f"{first.call}: {first.code}); `trailwarden status` lists them")
    return report
