"""The RAM mapping in SQL (``models.mapping.mapped_sql``) gives what the Python rules give.

Replay maps a busy agent's distinct calls in DuckDB; every call the SQL says it mapped
(``exact``) must map to exactly ``action`` and ``resources``, over ordinary and hostile facts
(escapes, braces, quotes, non-ASCII types and services, duplicate keys, nulls, numbers, bad JSON),
and the ordinary ones must be mapped in SQL, not all handed back to Python."""

from __future__ import annotations

import itertools
import json
import random

import duckdb
import pyarrow as pa

from models import mapping
from models.mapping import CallFacts, action, is_authorized_call, mapped_sql, resources

EVENT_TYPES = ["ApiCall", "ConsoleSignin", "AliyunServiceEvent", None]
EVENT_NAMES = ["GetObject", "DescribeInstances", "", None, "GetUser", "AssumeRole", "İnfo", "Get'X", "GETUSER"]
SERVICES = [("Oss", None), ("Ims", None), ("", None), (None, None), ("AasSub", None), ("Ecs", "Ram"),
            ("Ecs", ""), ("ÜniService", None), ("Sls", None), ("Ecs", "İms"), ("Actiontrail", "ActionTrail")]
REGIONS = ["cn-hangzhou", "", None]
ACCOUNTS = ["1234567890", "", None]
REFERENCES = [
    None, "", "{}", "[]", "not json", '{"ACS::ECS::Instance": ["i-1", "i-2"]}',
    '{"ACS::OSS::Object": ["bucket/a/b.txt"], "ACS::OSS::Bucket": ["bucket"]}',
    '{"ACS::Foo::Widget": ["w1"]}', '{"Foo:::Bar": ["x"]}', '{"x::": ["y"]}', '{"plain": ["p"]}',
    '{"acs::x::{0}": ["n"]}', '{"ACS::RAM::User": ["alice"]}', '{"ACS::ECS::Instance": []}',
    '{"ACS::ECS::Instance": [1, true]}', '{"ACS::ECS::Instance": ["i-1", null]}',
    '{"ACS::ECS::Instance": "i-1"}', '{"ACS::ECS::Instance": [["i-1"]]}',
    '{"ACS::ECS::Instance": ["i-1"], "ACS::ECS::Instance": ["i-2"]}',
    '{"ACS::ECS::Instance": ["i-\\"q"]}', '{"ACS::ECS::Instance": ["i-\\u00e9"]}',
    '{"ACS::OSS::Object": ["b/中文.txt", "b/it\'s"]}', '{"ACS::ÉCS::Disk": ["d-1"]}',
    '{"ACS::ECS::Disk": ["d-1", "d-1"]}', '{"İ::Thing": ["t"]}', '{"ACS::ECS::Instance": ["null-box"]}',
    '{\n "ACS::ECS::Instance" :\t[ "i-1" ,"i-2" ]\r\n}', '{"ACS::ECS::Instance": ["i-1\u0001"]}',
    '{"ACS::ECS::Instance": ["i-1"]} x', '{"ACS::ECS::\u007fDisk": ["d"]}', '{"ACS::OSS::Object": ["b/a\u00e9"],}',
]
RESOURCE_FIELDS = [(None, None), ("ACS::ECS::Instance", "i-1"), ("ACS::ECS::Instance", "i-9"), ("ACS::ECS::Disk", "d-1"),
                   ("", "x"), ("ACS::ECS::Instance", ""), ("ÀCS::X", "y")]
PARAMETERS = [None, '{"UserName": "bob"}', '{"RoleArn": "acs:ram::1:role/r"}']


def facts() -> list[CallFacts]:
    """Every reference and resource field with every service, the rest drawn at random."""
    rng = random.Random(18)
    out = []
    for refs, (rtype, rname), (service, code) in itertools.product(REFERENCES, RESOURCE_FIELDS, SERVICES):
        out.append(CallFacts(rng.choice(EVENT_TYPES), rng.choice(EVENT_NAMES), service, code, rng.choice(REGIONS),
                             rng.choice(ACCOUNTS), refs, rtype, rname, rng.choice(PARAMETERS)))
    return out


def mapped(rows: list[CallFacts]) -> list[tuple[bool, str | None, list[str] | None]]:
    con = duckdb.connect()
    table = pa.table({name: pa.array([getattr(f, name) for f in rows], pa.string())
                      for name in CallFacts.__dataclass_fields__})
    con.register("facts", pa.Table.from_arrays([*table.columns, pa.array(range(len(rows)))],
                                               [*table.column_names, "i"]))
    got = con.sql(f"SELECT exact, mapped_action, mapped_resources FROM ({mapped_sql('SELECT * FROM facts')}) "
                  "ORDER BY i").fetchall()
    return [(bool(e), a, r) for e, a, r in got]


def python(f: CallFacts) -> tuple[str, list[str]]:
    return action(f), resources(f) if is_authorized_call(f.event_type, f.service_name) else []


def test_sql_mapping_is_the_python_mapping_wherever_it_says_so() -> None:
    rows = facts()
    results = mapped(rows)
    exact = 0
    for f, (is_exact, act, res) in zip(rows, results, strict=True):
        if is_exact:
            exact += 1
            assert (act, res) == python(f), f
        else:
            assert act is None and res is None
    assert exact > len(rows) // 6  # the plain ones (about a fifth here) are mapped in SQL, not handed back


def test_ordinary_calls_are_mapped_in_sql() -> None:
    ordinary = [
        CallFacts("ApiCall", "GetObject", "Oss", None, "cn-hangzhou", "1234567890",
                  json.dumps({"ACS::OSS::Object": ["bucket/a/b.txt"]}), "ACS::OSS::Bucket", "bucket", None),
        CallFacts("ApiCall", "DescribeInstances", "Ecs", None, "cn-shanghai", None, None, None, None, None),
        CallFacts("ApiCall", "GetObject", "Oss", None, "cn-hangzhou", "1", json.dumps({"ACS::OSS::Object": ["b/中文"]},
                                                                                     ensure_ascii=False), None, None, None),
        CallFacts("ApiCall", "CreateDisk", "Ecs", None, "cn-hangzhou", "1", json.dumps({"ACS::New::Widget": ["w"]}),
                  "ACS::ECS::Instance", "i-1", None),
        CallFacts("ConsoleSignin", "ConsoleSignin", "AasSub", None, "", "1", None, None, None, None),
    ]
    results = mapped(ordinary)
    assert [r[0] for r in results] == [True] * len(ordinary)
    assert [(a, r) for _, a, r in results] == [python(f) for f in ordinary]
    assert results[3][2] == ["acs:ecs:cn-hangzhou:1:widget/w", "acs:ecs:cn-hangzhou:1:instance/i-1"]


def test_a_resource_type_with_braces_is_text() -> None:
    """A type from the log is not a format string (it made ``resources`` raise)."""
    f = CallFacts("ApiCall", "GetX", "Ecs", None, "cn-hangzhou", "1", '{"acs::x::{0}": ["n"]}', None, None, None)
    assert resources(f) == ["acs:ecs:cn-hangzhou:1:{0}/n"]
    assert mapped([f]) == [(True, "ecs:GetX", ["acs:ecs:cn-hangzhou:1:{0}/n"])]


def by_template(rows: list[CallFacts]) -> dict[int, tuple[str, list[str]]]:
    """What ``by_template`` maps: row number -> (action, resources)."""
    done = mapping.by_template([pa.array([getattr(f, name) for f in rows], pa.string())
                                for name in CallFacts.__dataclass_fields__])
    names = done.names.to_pylist()
    return {int(row): (done.actions[t], [done.heads[t] + name])
            for row, t, name in zip(done.rows, done.template, names, strict=True)}


def test_the_mapping_by_template_is_the_python_mapping_wherever_it_maps() -> None:
    """Calls naming one object each are mapped once per template, the name put back: exactly the
    Python rules' answer, and not where those rules compare the name with a resource field or a
    request parameter."""
    rows = facts()
    rows += [CallFacts("ApiCall", "GetObject", "Oss", None, region, "1", json.dumps({"ACS::OSS::Object": [name]},
                                                                                   ensure_ascii=ascii_only),
                       rtype, rname, params)
             for region in ("cn-hangzhou", "x\u0000y", 'q"\\', "\u202e")
             for name in ("b/k", "", "*", "b/\u202eexe.txt", "b/\u007f", "b/中文", "i-1")
             for ascii_only in (True, False)
             for rtype, rname, params in ((None, None, None), ("ACS::OSS::Object", "i-1", None),
                                          ("ACS::OSS::Object", "b/k", None), ("", "x", None),
                                          (None, None, '{"UserName": "bob"}'), (None, None, ""))]
    rows += [CallFacts("ApiCall", "GetUser", "Ims", None, "cn-hangzhou", "1", json.dumps({"ACS::RAM::User": [n]}),
                       None, None, '{"UserName": "alice"}') for n in ("alice", "bob")]
    # a role ARN in the parameters equal to the template's own resource, placeholder and all
    rows += [CallFacts("ApiCall", "AssumeRole", "Sts", None, "", "1", json.dumps({"ACS::RAM::Role": ["r1"]}),
                       None, None, json.dumps({"RoleArn": "acs:ram::1:role/\u0000"}))]
    done = by_template(rows)
    for i, got in done.items():
        assert got == python(rows[i]), rows[i]
    assert set(done) == {i for i, f in enumerate(rows) if _one_object(f)}
    assert not any(rows[i].request_parameters or (rows[i].resource_type and rows[i].resource_name) for i in done)


def _one_object(f: CallFacts) -> bool:
    """A call ``by_template`` maps: its references one object of one type (no escapes), no request
    parameters, not both resource fields, and RAM-authorized."""
    try:
        refs = json.loads(f.referenced_resources or "", object_pairs_hook=list)  # a key given twice: two pairs
    except ValueError:
        return False
    return (isinstance(refs, list) and len(refs) == 1 and "\\" not in (f.referenced_resources or "")
            and all(isinstance(v, list) and len(v) == 1 and isinstance(v[0], str) for _, v in refs)
            and not f.request_parameters and not (f.resource_type and f.resource_name)
            and is_authorized_call(f.event_type, f.service_name))
