"""A fake Resource Directory (Resource Manager 2020-03-31) endpoint on 127.0.0.1, for the real
``alibabacloud-resourcemanager20200331`` client: ``GetResourceDirectory`` and ``ListAccounts``.

The signature check, scripting (:meth:`fail_next`: ``Throttling.User``, an auth error...) and
the error answer are :mod:`tests.fakes.openapi`'s, shared with the fake RAM. ``ListAccounts`` is
paged as the real API pages it: ``PageNumber`` (from 1) and ``PageSize`` (1-100, default 10) in,
``{"Accounts": {"Account": [...]}, "PageNumber", "PageSize", "TotalCount"}`` out, each account with
``AccountId``, ``DisplayName``, ``Type`` (``ResourceAccount`` | ``CloudAccount``), ``Status``
(``CreateSuccess``...), ``JoinMethod`` (``created`` | ``invited``), ``JoinTime``, ``ModifyTime``
(ISO-8601 UTC), ``FolderId``, ``ResourceDirectoryId`` and ``ResourceDirectoryPath``. A directory
not enabled answers ``EntityNotExists.ResourceDirectory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakes.openapi import Failure, OpenApiFake

DIRECTORY_ID = "rd-3G7kPq"
MASTER_ID, MASTER_NAME = "1000200030004000", "acme-management"
DEFAULT_PAGE, MAX_PAGE = 10, 100


def member(account_id: str, display_name: str, *, kind: str = "ResourceAccount", status: str = "CreateSuccess",
           join_method: str = "created", folder: str = "fd-root", joined: str = "2025-03-01T08:00:00Z") -> dict[str, Any]:
    """One member account, in the wire shape ``ListAccounts`` answers."""
    return {"AccountId": account_id, "DisplayName": display_name, "Type": kind, "Status": status,
            "JoinMethod": join_method, "JoinTime": joined, "ModifyTime": joined, "FolderId": folder,
            "ResourceDirectoryId": DIRECTORY_ID, "ResourceDirectoryPath": f"{DIRECTORY_ID}/r-root/{account_id}"}


class FakeResourceDirectory(OpenApiFake):
    """One Resource Directory's member accounts, served on 127.0.0.1 (in this process)."""

    thread_name = "fake-resource-directory"
    host_id = "resourcemanager.aliyuncs.com"

    def __init__(self, accounts: list[dict[str, Any]], *, enabled: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.accounts = accounts
        self.enabled = enabled

    def _GetResourceDirectory(self, _q: Mapping[str, str]) -> dict[str, Any]:
        if not self.enabled:
            raise Failure(404, "EntityNotExists.ResourceDirectory", "The resource directory does not exist.")
        return {"ResourceDirectory": {
            "ResourceDirectoryId": DIRECTORY_ID, "MasterAccountId": MASTER_ID, "MasterAccountName": MASTER_NAME,
            "RootFolderId": "fd-root", "CreateTime": "2025-01-10T02:00:00Z", "ControlPolicyStatus": "Disabled",
            "MemberDeletionStatus": "Disabled"}}

    def _ListAccounts(self, q: Mapping[str, str]) -> dict[str, Any]:
        if not self.enabled:
            raise Failure(404, "EntityNotExists.ResourceDirectory", "The resource directory does not exist.")
        number, size = _int(q, "PageNumber", 1), _int(q, "PageSize", DEFAULT_PAGE)
        if number < 1 or not 1 <= size <= MAX_PAGE:
            raise Failure(400, "InvalidParameter", f"PageNumber must be >= 1 and PageSize 1-{MAX_PAGE}")
        page = self.accounts[(number - 1) * size:number * size]
        return {"Accounts": {"Account": page}, "PageNumber": number, "PageSize": size,
                "TotalCount": len(self.accounts)}


def _int(q: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(q.get(key) or default)
    except ValueError:
        raise Failure(400, "InvalidParameter", f"{key} is not a number") from None
