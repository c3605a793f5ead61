"""The Resource Directory (``alibabacloud-resourcemanager20200331``): the organisation's member
accounts, read with ``GetResourceDirectory`` and paged ``ListAccounts`` into a dated sync in the
store (migration ``0022_accounts.sql``; earlier syncs are kept as history).

Everything is read first and stored in one transaction: an unreachable endpoint, refused
credentials, a directory that is not there or a page that stays throttled after the retries store
nothing and fail in one line (exit 1). Calls, retries and their classification are
:class:`pipeline.ram.openapi.OpenApiCalls`', as for RAM. Only a management account (or a delegated
administrator) may list the members: others get ``NoPermission``, said as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alibabacloud_resourcemanager20200331 import models as rd_models
from alibabacloud_resourcemanager20200331.client import Client as RdClient

from pipeline.core.errors import TerminalError
from pipeline.core.times import utcnow
from pipeline.ingest.sources.credentials import Credentials, from_env
from pipeline.ram.openapi import CallFailed, Gone, OpenApiCalls, Unavailable, sdk_config
from pipeline.store.store import Store, first_row

RD_ENDPOINT = "resourcemanager.aliyuncs.com"
PAGE = 100  # ListAccounts' largest page


class DirectoryUnavailable(Unavailable):
    """The Resource Directory cannot be read (unreachable, credentials refused, not there)."""


@dataclass
class DirectoryApi(OpenApiCalls):
    """The Resource Manager client, and what was called."""

    client: Any = None
    service: str = "the Resource Directory"
    endpoint_key: str = "resource_directory.endpoint"
    command: str = "trailwarden accounts sync"
    unavailable: type[Unavailable] = DirectoryUnavailable


def connect_directory(endpoint: str | None, *, credentials: Credentials | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> DirectoryApi:
    """A client for ``endpoint`` (``http://127.0.0.1:PORT`` for the tests' fake, a proxy...), else
    the public ``resourcemanager.aliyuncs.com``; credentials from the environment."""
    client = RdClient(sdk_config(endpoint or RD_ENDPOINT, credentials or from_env()))
    return DirectoryApi(client=client, where=endpoint or RD_ENDPOINT, sleep=sleep)


@dataclass(frozen=True)
class MemberAccount:
    id: str
    display_name: str | None
    type: str | None
    status: str | None
    join_method: str | None
    join_time: datetime | None
    folder_id: str | None
    path: str | None


@dataclass
class Directory:
    """What one sync read."""

    id: str
    master_account_id: str | None
    master_account_name: str | None
    accounts: list[MemberAccount] = field(default_factory=list)
    taken_at: datetime = field(default_factory=utcnow)


def read_directory(api: DirectoryApi, *, page: int = PAGE) -> Directory:
    """The directory and all its member accounts (every page). Raises when any of it cannot be read."""
    try:
        info = api.call("GetResourceDirectory", lambda: api.client.get_resource_directory().body.resource_directory)
        directory = Directory(id=str(info.resource_directory_id), master_account_id=info.master_account_id,
                              master_account_name=info.master_account_name)
        directory.accounts = _all_members(api, page)
    except Gone as exc:
        raise DirectoryUnavailable(f"no Resource Directory for these credentials ({exc.code}): `accounts sync` "
                                   "needs the management account of an enabled Resource Directory") from None
    except CallFailed as exc:
        raise TerminalError(f"the Resource Directory refused {exc}; trailwarden's key needs "
                            "resourcemanager:GetResourceDirectory and resourcemanager:ListAccounts") from None
    return directory


def _all_members(api: DirectoryApi, page: int) -> list[MemberAccount]:
    """Pages of ``ListAccounts`` until ``TotalCount`` is reached or a page comes back short; an
    account seen twice (one joined while paging shifts the pages) is kept once."""
    found: dict[str, MemberAccount] = {}
    number = 1
    while True:
        request = rd_models.ListAccountsRequest(page_number=number, page_size=page)
        body = api.call("ListAccounts", lambda r=request: api.client.list_accounts(r).body)  # type: ignore[misc]
        items = body.accounts.account if body.accounts and body.accounts.account else []
        for item in items:
            found.setdefault(str(item.account_id), _member(item))
        if len(items) < page or number * page >= int(body.total_count or 0):
            return list(found.values())
        number += 1


def _member(item: Any) -> MemberAccount:
    return MemberAccount(id=str(item.account_id), display_name=item.display_name, type=item.type,
                         status=item.status, join_method=item.join_method, join_time=_time(item.join_time),
                         folder_id=item.folder_id, path=item.resource_directory_path)


def _time(text: str | None) -> datetime | None:
    """``2025-03-01T08:00:00Z`` (or with an offset) -> aware UTC; anything else None."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def save_directory(store: Store, directory: Directory, *, calls: int, seconds: float | None) -> int:
    """Store one sync, whole, in one transaction; returns its id."""
    with store.transaction() as con:
        row = first_row(con.execute(
            "INSERT INTO account_syncs (taken_at, directory_id, master_account_id, master_account_name, accounts, "
            "calls, seconds) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [directory.taken_at, directory.id, directory.master_account_id, directory.master_account_name,
             len(directory.accounts), calls, seconds]))
        assert row is not None
        sync_id = int(row[0])
        if directory.accounts:
            con.executemany("INSERT INTO directory_accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [[sync_id, a.id, a.display_name, a.type, a.status, a.join_method, a.join_time,
                              a.folder_id, a.path] for a in directory.accounts])
    return sync_id


def last_sync(store: Store) -> tuple[int, Directory] | None:
    """The latest sync (its id and what it read), None before the first."""
    row = first_row(store.con.execute(
        "SELECT id, taken_at, directory_id, master_account_id, master_account_name FROM account_syncs "
        "ORDER BY id DESC LIMIT 1"))
    if row is None:
        return None
    members = store.con.execute(
        "SELECT account_id, display_name, type, status, join_method, join_time, folder_id, path "
        "FROM directory_accounts WHERE sync_id = ? ORDER BY account_id", [row[0]]).fetchall()
    directory = Directory(id=row[2], master_account_id=row[3], master_account_name=row[4], taken_at=row[1],
                          accounts=[MemberAccount(*m) for m in members])
    return int(row[0]), directory
