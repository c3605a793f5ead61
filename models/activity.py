"""What a call touched, in the coarse terms an agent's volume and novelty are learned in: its
*resource class* and whether its action is sensitive or destructive.

* resource class: for OSS, the bucket (``bucket:<name>``: reading a bucket never touched is what
  exfiltration looks like); for other services, the resource type ActionTrail names in
  ``referencedResources`` (``ACS::ECS::Snapshot``); empty when the event names no resource. The
  object key, instance id or snapshot id is never part of it: thousands of objects of one bucket
  are one class.
* sensitive action families (issue 15): ``ram:*`` (ActionTrail writes ``Ims``/``Ram``), ``kms:*``,
  ``sts:AssumeRole``, ``actiontrail:*``, ``sls:Delete*``, each with a weight (how much its first use
  matters).
* destructive actions: ``Delete*``, ``Remove*``, ``Release*``, ``Terminate*``, ``Purge*``...

``RESOURCE_CLASS_SQL`` is the SQL twin of :func:`resource_classes` (the tests check them against
each other), so a part fitted in DuckDB and a detector scoring a pandas frame agree.
"""

from __future__ import annotations

import re

import pandas as pd

# {"<type>": ["<name>", ...]} as ingest normalizes referencedResources: the first type and the part of
# its first name before a "/" (an OSS bucket)
_FIRST = r'^\{"([^"]+)":\["([^"/]*)'
_REF = "CAST(referenced_resources AS VARCHAR)"
RESOURCE_CLASS_SQL = (
    f"CASE WHEN regexp_extract({_REF}, '{_FIRST}', 1) ILIKE 'ACS::OSS::%' "
    f"AND regexp_extract({_REF}, '{_FIRST}', 2) <> '' "
    f"THEN 'bucket:' || regexp_extract({_REF}, '{_FIRST}', 2) "
    f"ELSE coalesce(regexp_extract({_REF}, '{_FIRST}', 1), '') END")
_FIRST_RE = re.compile(_FIRST)


def resource_classes(referenced: pd.Series) -> pd.Series:
    """Per event (``referenced_resources`` as text), its resource class, as :data:`RESOURCE_CLASS_SQL`.
    Each distinct text is parsed once."""
    codes, uniques = pd.factorize(referenced, use_na_sentinel=True)
    named = [resource_class(u) for u in uniques]
    table = pd.Series([*named, ""], dtype=object)
    return pd.Series(table.to_numpy()[codes], index=referenced.index, dtype=object)


def resource_class(text: object) -> str:
    if not isinstance(text, str):
        return ""
    found = _FIRST_RE.match(text)
    if found is None:
        return ""
    rtype, head = found.group(1), found.group(2)
    if rtype.upper().startswith("ACS::OSS::") and head:
        return f"bucket:{head}"
    return rtype


# sensitive families: (family, how much its first use weighs, its test on (service, action))
SENSITIVE: tuple[tuple[str, float], ...] = (
    ("ram:*", 1.0), ("kms:*", 1.0), ("actiontrail:*", 1.0), ("sts:AssumeRole", 0.7), ("sls:Delete*", 0.8))
_RAM_SERVICES = frozenset({"ram", "ims"})
_DESTRUCTIVE = ("delete", "remove", "release", "terminate", "purge", "destroy", "detach", "unbind", "deactivate")


def sensitive_family(service: object, action: object) -> str | None:
    """The sensitive family of a call (``ram:*``...), or None."""
    svc = str(service or "").lower()
    name = str(action or "")
    if svc in _RAM_SERVICES:
        return "ram:*"
    if svc == "kms":
        return "kms:*"
    if svc == "actiontrail":
        return "actiontrail:*"
    if svc == "sts" and name.lower().startswith("assumerole"):
        return "sts:AssumeRole"
    if svc in ("sls", "log") and name.lower().startswith("delete"):
        return "sls:Delete*"
    return None


def family_weight(family: str) -> float:
    return dict(SENSITIVE).get(family, 0.0)


def destructive(action: object) -> bool:
    """Whether an action destroys or detaches something (``DeleteSnapshot``, ``RemoveUserFromGroup``)."""
    return str(action or "").lower().startswith(_DESTRUCTIVE)
