"""Scoring what new RAM snapshots changed: each snapshot stored since the last detect (``ram
sync``) is compared with the one before it (``models.ram.diff``), and the changes are handed to
the detectors that read them (``reads_ram_changes``: ``permission_drift``) through the models.
How far this has gone is kept in ``pipeline_state`` (``detect.ram_snapshot``), so each snapshot is
scored once; the first snapshot of a store has nothing before it and only sets the mark.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pandas as pd

from detectors.base import Detector, Finding, Models
from models.inventory import Inventory
from models.ram import diff
from models.scope import compile_scopes
from pipeline.core.config import Config
from pipeline.detection.findings import save_findings
from pipeline.detection.guard import guarded
from pipeline.ram.snapshots import (
    has_ram_tables,
    latest_snapshot_id,
    load_snapshot,
    snapshot_ids_after,
)
from pipeline.store.store import Store

log = logging.getLogger(__name__)
STATE_KEY = "detect.ram_snapshot"


def score_ram_changes(store: Store, config: Config, inventory: Inventory, active: list[Detector], report: Any,
                      run_id: int | None) -> None:
    """Score every snapshot newer than the mark; findings are saved like detect's."""
    chosen = [d for d in active if getattr(d, "reads_ram_changes", False)]
    if not chosen or not has_ram_tables(store):
        return
    done = int(store.read_state(STATE_KEY) or 0)
    for sid in snapshot_ids_after(store, done):
        findings = _score_snapshot(store, config, inventory, chosen, sid, report)
        saved = save_findings(store, findings, {d.id: d.dedup_window for d in chosen}, run_id)
        report.new += saved.new
        report.extended += saved.extended
        report.new_ids.extend(saved.new_ids)
        if any(report.detectors.get(d.id, {}).get("error") for d in chosen):
            return  # scored again next time
        store.write_state(STATE_KEY, str(sid))


def _score_snapshot(store: Store, config: Config, inventory: Inventory, chosen: list[Detector], sid: int,
                    report: Any) -> list[Finding]:
    previous = latest_snapshot_id(store, before=sid)
    after = load_snapshot(store, sid)
    before = load_snapshot(store, previous) if previous is not None else None
    if after is None or before is None:
        return []
    changes = diff(before, after)
    if not changes:
        return []
    models = Models(inventory=inventory, scopes=compile_scopes(inventory), timezone=config.tz, ram=after,
                    ram_changes=changes)
    out: list[Finding] = []
    for det in chosen:
        no_events = pd.DataFrame({c: pd.Series(dtype=object) for c in det.columns})
        out.extend(guarded(det, report, f" on RAM snapshot {sid}", partial(det.score, no_events, models, after.taken_at)))
    return out
