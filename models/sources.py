"""Where a call comes from, in the coarse terms an agent's habits are learned in: the source
network, the region and the client (user-agent family).

* network: the ``/24`` of an IPv4 source, the ``/64`` of an IPv6 one. ``sourceIpAddress`` is not
  always an address ("Internal", masked ``192.168.XX.XX``, a service's host name, empty): only what
  ``ipaddress`` accepts has a network (../shared/notes/actiontrail.md, 16).
* region: ``acsRegion`` of a regional call; calls to global services (RAM, STS: ``isGlobal``, or
  their service names) are filed under the trail's home region, which says nothing about where the
  agent works, so they have none.
* client: a normalized product token of the user agent, without versions or run ids:
  ``aliyun-cli``, ``terraform``, ``python-requests``, ``alibabacloud-sdk-python``, ``aliyun-sdk-java``,
  ``console`` (the web console and the browser that signs in to it), ``boto3``...

``models.baselines`` learns these per agent in SQL; :data:`IPV4_NETWORK_SQL` is the SQL twin of
:func:`network_of` for IPv4 (the two are checked against each other by the tests).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from models.mapping import GLOBAL_CODES

KINDS = ("network", "region", "client")
# the /24 of a canonical dotted quad (ingest only marks ip_version 4 on what ipaddress accepts)
IPV4_NETWORK_SQL = r"regexp_replace(source_ip, '\.[0-9]+$', '.0/24')"
# the SQL twin of region_of
REGION_SQL = (f"CASE WHEN is_global IS NOT TRUE AND coalesce(lower(service_name), '') NOT IN "
              f"({', '.join(repr(c) for c in sorted(GLOBAL_CODES))}) THEN nullif(acs_region, '') END")

# substring of the lower-cased user agent -> family; first match wins
_KNOWN_CLIENTS = (
    ("terraform", "terraform"),
    ("aliyuncli", "aliyun-cli"),
    ("aliyun-cli", "aliyun-cli"),
    ("console", "console"),  # AliyunConsole, aliyun-oss-console, console.ec2..., S3Console
)
_SDK_LANGUAGE = re.compile(r"\b(python|java|go|node(?:js)?|php|ruby|csharp|\.net)/", re.IGNORECASE)
_FIRST_TOKEN = re.compile(r"[\s/(;,]")
_RUN_ID = re.compile(r"[-_][0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$")  # stratus-red-team_<uuid>
_VERSION = re.compile(r"[-_]v?\d+(?:\.\d+)*$")
MAX_FAMILY = 40  # attacker-controlled text: keep it short


def address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a ``sourceIpAddress`` holds; None for "Internal", masked, host names, empty."""
    if not ip:
        return None
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def network_of(ip: str | None) -> str | None:
    """``203.0.113.0/24`` for ``203.0.113.7``, ``2001:db8:1:2::/64`` for an IPv6 address; None for
    anything that is not an address."""
    addr = address(ip)
    if addr is None:
        return None
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@lru_cache(maxsize=65536)
def client_family(user_agent: str | None) -> str | None:
    """The user agent's product family (None when there is none to speak of)."""
    text = (user_agent or "").strip().strip("[]").strip()
    if not text:
        return None
    low = text.lower()
    if low.startswith("alibabacloud"):  # the Tea SDKs: "AlibabaCloud (Linux; x86_64) Python/3.11 Core/..."
        language = _SDK_LANGUAGE.search(text)
        return "alibabacloud-sdk" + (f"-{language.group(1).lower()}" if language else "")
    for needle, family in _KNOWN_CLIENTS:
        if needle in low:
            return family
    if low.startswith("mozilla/"):
        return "console"  # a browser: the console's sign-in
    token = _FIRST_TOKEN.split(low, maxsplit=1)[0]
    token = _VERSION.sub("", _RUN_ID.sub("", token))
    return (token or low)[:MAX_FAMILY]


def region_of(region: str | None, is_global: bool | None, service_name: str | None) -> str | None:
    """The region a call worked in; None for global services and calls that name none."""
    if is_global is True or not region or (service_name or "").lower() in GLOBAL_CODES:
        return None
    return region


# -- the same, for a frame's columns ------------------------------------------------------------------
Coded = tuple[np.ndarray, list[str]]  # per row, an index into the distinct values (-1: none)


def source_values(df: pd.DataFrame) -> dict[str, Coded]:
    """Each kind of source of each row of a frame with ``source_ip``, ``acs_region``, ``is_global``,
    ``service_name`` and ``user_agent``, as codes into the distinct values. Each distinct raw value
    is worked out once, so the cost follows the distinct values, not the rows."""
    region_codes, regions = _coded(df["acs_region"], lambda r: r or None)
    global_codes, services = pd.factorize(df["service_name"])
    global_service = np.append([str(s).lower() in GLOBAL_CODES for s in services], False)[global_codes]
    regional = ~(df["is_global"].eq(True).fillna(False).to_numpy(dtype=bool) | global_service)
    return {"network": _coded(df["source_ip"], network_of),
            "region": (np.where(regional, region_codes, -1), regions),
            "client": _coded(df["user_agent"], client_family)}


def _coded(values: pd.Series, fn: Callable[[Any], str | None]) -> Coded:
    codes, uniques = pd.factorize(values)  # -1 for a missing value
    mapped = [fn(v) for v in uniques]
    names = list(dict.fromkeys(m for m in mapped if m is not None))
    index = {name: i for i, name in enumerate(names)}
    remap = np.array([index[m] if m is not None else -1 for m in mapped] + [-1], dtype=np.int64)
    return remap[codes], names
