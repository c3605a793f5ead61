"""Table-driven tests of the RAM policy evaluator (models/policy.py).

The decision cases live in ``policy_cases.yaml``; each one is written from a documented example
or rule in /work/shared/notes/ram-policy.md and names it in ``source``. The invalid documents that
``compile_policy`` must reject are listed below in ``INVALID``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.policy import Decision, PolicyError, PolicySet, Request, compile_policy, evaluate

CASES_FILE = Path(__file__).with_name("policy_cases.yaml")
MIN_CASES = 90
CASE_KEYS = {"id", "source", "policies", "request", "expect", "xfail"}
REQUEST_KEYS = {"action", "resource", "context", "unknown"}
EXPECT = {d.value: d for d in Decision}


class CaseFileError(Exception):
    """The case table is malformed; raised at collection so the run fails loudly."""


def _check_case(i: int, case: Any) -> str:
    if not isinstance(case, dict):
        raise CaseFileError(f"{CASES_FILE.name}: case #{i} is not a mapping")
    cid = case.get("id")
    where = f"{CASES_FILE.name}: case #{i} ({cid!r})"
    if not isinstance(cid, str) or not cid:
        raise CaseFileError(f"{where}: missing id")
    if not isinstance(case.get("source"), str) or not case["source"].strip():
        raise CaseFileError(f"{where}: missing source (every case must cite the notes)")
    if extra := set(case) - CASE_KEYS:
        raise CaseFileError(f"{where}: unexpected keys {sorted(extra)}")
    if not isinstance(case.get("policies"), list):
        raise CaseFileError(f"{where}: policies must be a list of documents")
    req = case.get("request")
    if not isinstance(req, dict) or not {"action", "resource"} <= set(req) or set(req) - REQUEST_KEYS:
        raise CaseFileError(f"{where}: request needs action and resource (and only {sorted(REQUEST_KEYS)})")
    if case.get("expect") not in EXPECT:
        raise CaseFileError(f"{where}: expect must be one of {sorted(EXPECT)}")
    if "xfail" in case and not (isinstance(case["xfail"], str) and case["xfail"].strip()):
        raise CaseFileError(f"{where}: xfail needs a reason")
    return cid


def load_cases(path: Path = CASES_FILE) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list):
        raise CaseFileError(f"{path.name}: expected a top-level `cases:` list")
    ids = [_check_case(i, c) for i, c in enumerate(cases)]
    if dupes := sorted(k for k, n in Counter(ids).items() if n > 1):
        raise CaseFileError(f"{path.name}: duplicate ids {dupes}")
    if len(cases) < MIN_CASES:
        raise CaseFileError(f"{path.name}: only {len(cases)} cases, at least {MIN_CASES} required")
    return cases


CASES = load_cases()


def _params(cases: list[dict[str, Any]]) -> list[Any]:
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if "xfail" in case else []
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


def _request(spec: dict[str, Any]) -> Request:
    # Request.unknown holds lower-case keys (see models.policy.Request); the table writes them
    # the way the docs spell them.
    return Request(
        action=spec["action"],
        resource=spec["resource"],
        context=dict(spec.get("context") or {}),
        unknown=frozenset(k.lower() for k in spec.get("unknown") or ()),
    )


@pytest.mark.parametrize("case", _params(CASES))
def test_policy_case(case: dict[str, Any]) -> None:
    request = _request(case["request"])
    expected = EXPECT[case["expect"]]
    policy_set = PolicySet.from_documents(case["policies"])
    first = policy_set.evaluate(request)
    assert first.decision is expected, f"{case['id']} ({case['source']}): {first}"
    # a second evaluation comes from the decision cache and must agree
    assert policy_set.evaluate(request).decision is expected
    # the one-off helper agrees with the compiled set
    assert evaluate(case["policies"], request).decision is expected
    if expected in (Decision.ALLOW, Decision.EXPLICIT_DENY, Decision.UNKNOWN):
        assert first.statement, "the deciding statement should be named"


def test_case_table_covers_every_family() -> None:
    families = Counter(c["id"].split("-", 1)[0] for c in CASES)
    assert set(families) == {"shape", "action", "resource", "op", "logic", "unknown", "eval", "system"}
    for family in families:
        outcomes = {c["expect"] for c in CASES if c["id"].startswith(family + "-")}
        assert len(outcomes) >= 2, f"{family} needs positive and negative cases, has {outcomes}"


def test_case_table_covers_all_21_operators() -> None:
    operators = {
        "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
        "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan",
        "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals",
        "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
        "DateGreaterThanEquals", "Bool", "IpAddress", "NotIpAddress",
    }
    seen: dict[str, set[str]] = {op: set() for op in operators}
    for case in CASES:
        for doc in case["policies"]:
            statements = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
            for st in statements:
                for op in st.get("Condition", {}):
                    seen[op].add(case["expect"])
    missing = {op for op, outcomes in seen.items() if len(outcomes) < 2}
    assert not missing, f"operators without both a matching and a non-matching case: {sorted(missing)}"


def test_loader_rejects_short_or_unsourced_tables(tmp_path: Path) -> None:
    good = {"id": "x-0", "source": "s", "policies": [], "request": {"action": "a:b", "resource": "r"},
            "expect": "ImplicitDeny"}
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"cases": [dict(good, id=f"x-{i}") for i in range(MIN_CASES - 1)]}))
    with pytest.raises(CaseFileError, match="at least 90"):
        load_cases(short)
    unsourced = tmp_path / "unsourced.yaml"
    rows = [dict(good, id=f"x-{i}") for i in range(MIN_CASES)]
    del rows[7]["source"]
    unsourced.write_text(yaml.safe_dump({"cases": rows}))
    with pytest.raises(CaseFileError, match="missing source"):
        load_cases(unsourced)


# -- documents compile_policy must reject -------------------------------------------------------
def _doc(**statement: Any) -> dict[str, Any]:
    st = {"Effect": "Allow", "Action": "ecs:DescribeInstances", "Resource": "*"}
    st.update(statement)
    return {"Version": "1", "Statement": [{k: v for k, v in st.items() if v is not None}]}


def _cond(op: str, value: Any, key: str = "acs:SourceIp") -> dict[str, Any]:
    return _doc(Condition={op: {key: value}})


SYNTAX = "ram-policy.md §1.1 grammar; AlibabaCloudDocs/ram: …/Policy structure and syntax.md"
OPERATORS_DOC = "ram-policy.md §1.4; https://www.alibabacloud.com/help/en/ram/conditional-operator"

# (id, document, text the message or .where must contain, source)
INVALID: list[tuple[str, Any, str, str]] = [
    ("version-aws", {"Version": "2012-10-17", "Statement": _doc()["Statement"]}, "Version",
     'ram-policy.md §1.1: Version has "only valid value \'1\'"; §5 AWS uses 2012-10-17'),
    ("version-missing", {"Statement": _doc()["Statement"]}, "Version", SYNTAX),
    ("version-int", {"Version": 1, "Statement": _doc()["Statement"]}, "Version",
     SYNTAX + ' ("Version" : ("1") - a string)'),
    ("statement-missing", {"Version": "1"}, "Statement", SYNTAX),
    ("statement-empty-list", {"Version": "1", "Statement": []}, "Statement", SYNTAX),
    ("effect-lower-case", _doc(Effect="allow"), "Effect", SYNTAX + ' ("Allow" | "Deny")'),
    ("effect-missing", _doc(Effect=None), "Effect", SYNTAX),
    ("action-and-notaction", _doc(NotAction="ecs:StopInstance"), "NotAction",
     "ram-policy.md §1.1: a statement must contain exactly one of Action and NotAction"),
    ("neither-action-nor-notaction", _doc(Action=None), "Action",
     "ram-policy.md §1.1: Action or NotAction is required"),
    ("resource-missing", _doc(Resource=None), "Resource", SYNTAX + " (<resource_block> required)"),
    ("principal-present", _doc(Principal={"RAM": ["acs:ram::123456789012:root"]}), "Principal",
     "ram-policy.md §0.1/§1.1: Principal only in resource-based policies (trust, bucket policies)"),
    ("op-StringEqualsIfExists", _cond("StringEqualsIfExists", "10.0.0.1"), "IfExists",
     OPERATORS_DOC + " (no …IfExists)"),
    ("op-BoolIfExists", _cond("BoolIfExists", "true", "acs:MFAPresent"), "IfExists",
     "ram-policy.md §1.4 [field report] \"BoolIfExists 阿里云不支持\""),
    ("op-Null", _cond("Null", "true", "acs:ResourceTag/team"), "Null",
     "ram-policy.md §1.4 [field report] RAM rejects IfExists/Null at policy creation"),
    ("op-ForAnyValue", _cond("ForAnyValue:StringEquals", "dev", "acs:TagKeys"), "ForAnyValue",
     "ram-policy.md §1.4: ForAnyValue/ForAllValues absent from the official operator page - reject"),
    ("op-ForAllValues", _cond("ForAllValues:StringLike", "dev*", "acs:TagKeys"), "ForAllValues",
     "ram-policy.md §1.4: ForAnyValue/ForAllValues absent from the official operator page - reject"),
    ("op-ArnLike", _cond("ArnLike", "acs:ram:*:*:role/x", "acs:PrincipalARN"), "Arn",
     OPERATORS_DOC + " (no ARN operators)"),
    ("op-BinaryEquals", _cond("BinaryEquals", "QmluYXJ5", "example:Blob"), "Binary",
     OPERATORS_DOC + " (no Binary operators)"),
    ("op-unknown-name", _cond("StringStartsWith", "dev", "acs:ResourceTag/team"), "StringStartsWith",
     OPERATORS_DOC + " (21 operators only)"),
    ("numeric-not-a-number", _cond("NumericLessThan", "ten", "example:Count"), "ten",
     OPERATORS_DOC + " (Number type)"),
    ("numeric-nan", _cond("NumericLessThan", "NaN", "example:Count"), "NaN",
     OPERATORS_DOC + " (Number type: numeric comparison; NaN is not a number)"),
    ("date-not-a-date", _cond("DateGreaterThan", "tomorrow", "acs:CurrentTime"), "tomorrow",
     OPERATORS_DOC + " (ISO 8601 dates)"),
    ("bool-maybe", _cond("Bool", "maybe", "acs:SecureTransport"), "maybe",
     OPERATORS_DOC + ' (Bool "true" / "false")'),
    ("ip-not-an-ip", _cond("IpAddress", "not-an-ip"), "not-an-ip", OPERATORS_DOC + " (IP or CIDR)"),
    ("action-without-colon", _doc(Action="DescribeInstances"), "DescribeInstances",
     "ram-policy.md §1.2: Format is <ram-code>:<action-name>"),
    ("action-empty-list", _doc(Action=[]), "Action",
     SYNTAX + " (<action_block> = [<action_string>, ...])"),
    ("resource-empty-list", _doc(Resource=[]), "Resource",
     SYNTAX + " (<resource_block> = [<resource_string>, ...])"),
    ("condition-value-empty-list", _cond("IpAddress", []), "acs:SourceIp",
     SYNTAX + " (<condition_block> = { <operator> : { <key> : [<value>, ...] } })"),
    ("trust-policy-shape", {"Version": "1", "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow",
                            "Principal": {"RAM": ["acs:ram::123456789012:root"]}}]}, "Principal",
     "ram-policy.md §1.6: trust policies have Principal and no Resource (Edit the trust policy of a RAM role.md)"),
]


# Evaluator bugs found by this table, as {INVALID id: reason}; each stays a strict xfail until
# models/policy.py is fixed. ("numeric-nan" was one: float() took "NaN"; fixed in _num.)
KNOWN_BUGS: dict[str, str] = {}


def _invalid_params() -> list[Any]:
    return [
        pytest.param(
            doc, names, id=case_id,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case_id])] if case_id in KNOWN_BUGS else [],
        )
        for case_id, doc, names, _ in INVALID
    ]


def test_invalid_table_is_sourced() -> None:
    assert all(source.strip() for *_, source in INVALID)
    assert len({case_id for case_id, *_ in INVALID}) == len(INVALID)
    assert set(KNOWN_BUGS) <= {case_id for case_id, *_ in INVALID}


@pytest.mark.parametrize(("doc", "names"), _invalid_params())
def test_invalid_document_rejected(doc: Any, names: str) -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy(doc, "bad")
    err = info.value
    assert names.lower() in f"{err} {err.where}".lower(), f"{err!s} (where={err.where!r}) should name {names!r}"
