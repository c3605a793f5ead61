"""The detector catalogue: every registered detector keeps its declared contract (elastic's
``test_all_rules.py``), so adding one means adding its module and its tests, nothing else.

Each detector has a unique id (its module's name), a severity, parameters that include its dedup
window and are overridable through the config, a docstring saying what it misses, columns the store
has, a test module of its own run through the harness; what it learns (``learns``) is a proper part
that stores beside the others in one flat JSON object; a coincidence it declares is consistent with
its parameters. The README lists each of them and counts none. (That ``models/`` and
``detectors/`` import nothing of ``pipeline`` but its core is ``tests/test_architecture.py``'s.)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from datetime import timedelta

import pytest

import detectors
from detectors.base import SEVERITIES, Coincidence, Detector, severity_rank
from models.baselines import Baseline, Learned
from pipeline.ingest.events import EVENT_COLUMNS
from tests.conftest import ROOT

REGISTRY = detectors.registry()
# the detectors the design and the issues asked for; more may be added, none of these removed
DESIGNED = {"out_of_scope", "odd_hours", "failure_storm", "audit_tampering", "unregistered_identity",
            "expired_agent", "new_source", "privilege_escalation"}
SHARED = {f.name for f in dataclasses.fields(Baseline)} - {"parts"}


def test_the_designed_detectors_are_registered() -> None:
    assert set(REGISTRY) >= DESIGNED


@pytest.mark.parametrize("cls", REGISTRY.values(), ids=list(REGISTRY))
def test_each_detector_declares_its_contract(cls: type[Detector]) -> None:
    assert cls.__module__ == f"detectors.{cls.id}", "a detector's id is its module's name, so ids are unique"
    assert cls.severity in SEVERITIES
    doc = (sys.modules[cls.__module__].__doc__ or "") + (cls.__doc__ or "")
    assert "Known gaps" in doc, f"{cls.id} does not say what it misses"
    extras = {"agent", "request_parameters"}
    missing = [c for c in cls.columns if c not in EVENT_COLUMNS and c not in extras]
    assert not missing, f"{cls.id} reads columns the store does not have: {missing}"
    assert not inspect.isabstract(cls), f"{cls.id} does not implement score()"


@pytest.mark.parametrize("cls", REGISTRY.values(), ids=list(REGISTRY))
def test_each_parameter_is_overridable_through_the_config(cls: type[Detector]) -> None:
    assert "dedup_window" in cls.parameters
    (built,) = [d for d in detectors.build({cls.id: {"dedup_window": "7h"}}) if d.id == cls.id]
    assert built.dedup_window == timedelta(hours=7)
    for name, default in cls.parameters.items():  # each default is a valid config value
        (built,) = [d for d in detectors.build({cls.id: {name: default}}) if d.id == cls.id]
        assert built.params[name] == default


@pytest.mark.parametrize("cls", REGISTRY.values(), ids=list(REGISTRY))
def test_each_detector_has_its_examples_run_through_the_harness(cls: type[Detector]) -> None:
    module = ROOT / "tests" / "detectors" / f"test_{cls.id}.py"
    assert module.exists(), f"{cls.id}'s firing and non-firing examples belong in {module.name}"
    assert "from tests.detectors import harness" in module.read_text(encoding="utf-8")


@pytest.mark.parametrize("cls", [c for c in REGISTRY.values() if c.learns is not None],
                         ids=[i for i, c in REGISTRY.items() if c.learns is not None])
def test_what_a_detector_learns_is_a_proper_part(cls: type[Detector]) -> None:
    part = cls.learns
    assert part is not None and issubclass(part, Learned) and dataclasses.is_dataclass(part)
    assert part.__module__ == cls.__module__, "a detector's part lives with it"
    assert not inspect.isabstract(part), f"{part.__name__} has no fit"
    empty = part()  # every field has a default: an older stored baseline without them still loads
    assert part.from_stored({}) == empty
    assert part.from_stored(json.loads(json.dumps(empty.stored()))) == empty
    clash = SHARED & set(part.stored_fields())
    assert not clash, f"{part.__name__} reuses the shared baseline's fields {sorted(clash)}"


def test_no_two_parts_store_a_field_under_the_same_name() -> None:
    seen: dict[str, str] = {}
    for det_id, cls in REGISTRY.items():
        for name in cls.learns.stored_fields() if cls.learns is not None else ():
            assert name not in seen, f"{det_id} and {seen[name]} both store {name!r}"
            seen[name] = det_id


@pytest.mark.parametrize("cls", REGISTRY.values(), ids=list(REGISTRY))
def test_a_declared_coincidence_is_consistent(cls: type[Detector]) -> None:
    """Declared exactly when the detector has coincidence parameters (so the config tunes it),
    a valid rule that raises the finding above its own severity."""
    coincidence = cls().coincidence
    tunable = any(name.startswith("coincidence") for name in cls.parameters)
    assert (coincidence is not None) == tunable
    if coincidence is not None:
        assert isinstance(coincidence, Coincidence) and coincidence.window > timedelta(0)
        assert severity_rank(coincidence.severity) > severity_rank(cls.severity)


NUMBER = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d+"


def test_the_readme_lists_every_detector_and_counts_none() -> None:
    """A count in prose goes stale with the next detector: the README lists them in its table
    (one row each) and says "every detector" elsewhere."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    counted = re.findall(rf"\b(?:{NUMBER})\b(?:\s+\S+){{0,2}}?\s+detectors\b|\b(?:{NUMBER}) in all\b", text, re.I)
    assert not counted, counted
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))
    assert set(REGISTRY) <= rows, sorted(set(REGISTRY) - rows)
