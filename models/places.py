"""Where a credential is used, in the coarse terms credential misuse is judged in: a *place*.

* ``cloud``: inside Alibaba Cloud - a call with a ``vpcId``, from a private (RFC 1918), shared
  (100.64.0.0/10, Alibaba's service addresses such as 100.104.x.x), loopback or link-local address,
  from 11.0.0.0/8 (Alibaba's internal service network: the ``11.168.x.x`` of a service role's
  call in the event reference), from ``Internal``, or from a service's host name
  (``ess.aliyuncs.com``). All of it is one place: a Function Compute role's calls come from a new
  service address nearly every call, and that is not a change of place.
* a public IPv4 ``/16`` (``203.0.0.0/16``) or IPv6 ``/48``: the *family* of networks an address
  belongs to, coarse enough that a home router's new lease or the next address of an office's
  NAT pool stays in it, fine enough that an office in Hangzhou and a VPS abroad never share one.
* None: nothing to say (a masked ``192.168.XX.XX``, an empty or unknown source).

This is prefix-level reasoning, not geography: two /16s of the same ISP a few streets apart are
two places, and two distant hosts of one /16 are one. An IP-to-location or ASN database would
tell distance, but the maintained ones either forbid redistribution (MaxMind's GeoLite2 EULA) or
are not shipped as maintained packages whose licence and freshness could be checked here; the
detector needs only "never seen for this agent" and "never seen together", which prefixes answer.

:data:`PARTS_SQL` then :data:`FAMILY_SQL` are the SQL twin of :func:`family_of` (the tests check
them against each other).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

CLOUD = "cloud"
# Alibaba Cloud's own networks besides the private ranges (../shared/notes/actiontrail.md, E4):
# 10/8, 11/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16 (_cloud_v4, and FAMILY_SQL)
_SERVICE_HOSTS = (".aliyuncs.com", ".aliyun.com", ".alibabacloud.com")

# The SQL twin of family_of, in two steps so the costly part runs on grouped rows: PARTS_SQL (per
# event, cheap: whether it has a VPC, the IP version, the first two octets of an IPv4 address or
# the whole source otherwise) and FAMILY_SQL (per group of those parts). IPv6 is left raw and
# folded in Python (``fold``): rare, and DuckDB has no prefix arithmetic for it.
PARTS_SQL = ("nullif(vpc_id, '') IS NOT NULL AS in_vpc, ip_version, "
             "CASE WHEN ip_version = 4 THEN split_part(source_ip, '.', 1) ELSE source_ip END AS ip_a, "
             "CASE WHEN ip_version = 4 THEN split_part(source_ip, '.', 2) END AS ip_b")
_A, _B = "TRY_CAST(ip_a AS INTEGER)", "TRY_CAST(ip_b AS INTEGER)"
FAMILY_SQL = f"""CASE
    WHEN in_vpc THEN '{CLOUD}'
    WHEN ip_version = 4 THEN CASE
        WHEN {_A} IN (10, 11, 127) OR ({_A} = 172 AND {_B} BETWEEN 16 AND 31) OR ({_A} = 192 AND {_B} = 168)
             OR ({_A} = 100 AND {_B} BETWEEN 64 AND 127) OR ({_A} = 169 AND {_B} = 254) THEN '{CLOUD}'
        ELSE {_A} || '.' || {_B} || '.0.0/16' END
    WHEN ip_version = 6 THEN ip_a
    WHEN lower(trim(ip_a)) = 'internal' OR lower(ip_a) LIKE '%.aliyuncs.com'
         OR lower(ip_a) LIKE '%.aliyun.com' OR lower(ip_a) LIKE '%.alibabacloud.com' THEN '{CLOUD}'
    END"""

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")  # what ipaddress accepts as IPv4


def _cloud_v4(a: int, b: int) -> bool:
    return a in (10, 11, 127) or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168) \
        or (a == 100 and 64 <= b <= 127) or (a == 169 and b == 254)


@lru_cache(maxsize=65536)
def address_family(ip: str | None) -> str | None:
    """The place of a ``sourceIpAddress`` alone (without a VPC): ``cloud``, a public /16 or /48,
    or None. A dotted quad is read by a regular expression (a window has thousands of distinct
    service addresses: ``ipaddress`` costs 30 times more), anything else by ``ipaddress``."""
    text = (ip or "").strip()
    if not text:
        return None
    quad = _DOTTED_QUAD.fullmatch(text)
    if quad:
        a, b = int(quad[1]), int(quad[2])
        return CLOUD if _cloud_v4(a, b) else f"{a}.{b}.0.0/16"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        low = text.lower()
        return CLOUD if low == "internal" or low.endswith(_SERVICE_HOSTS) else None
    if addr.version == 4:  # not a canonical dotted quad, yet an address
        a, b = addr.packed[0], addr.packed[1]
        return CLOUD if _cloud_v4(a, b) else f"{a}.{b}.0.0/16"
    if addr.is_private or addr.is_loopback or addr.is_link_local:
        return CLOUD
    return str(ipaddress.ip_network(f"{addr}/48", strict=False))


def family_of(ip: str | None, vpc_id: str | None = None) -> str | None:
    """The place of a call: ``cloud`` with a VPC id whatever the address, else by address."""
    if vpc_id:
        return CLOUD
    return address_family(ip)


def fold(value: str | None) -> str | None:
    """A value of :data:`FAMILY_SQL` as :func:`family_of` names it (raw IPv6 addresses folded)."""
    if value is None or value == CLOUD or value.endswith("/16"):
        return value
    return address_family(value)
