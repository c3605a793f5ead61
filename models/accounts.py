"""The organisation's accounts (the config's ``accounts:``): their ids and the aliases people use.

An empty list is the single-account setup every earlier config describes: nothing is labelled
and an identity is shown bare (``ram-user:ci-deploy``). With more than one account, a raw identity
is shown with its *home* account (``ram-user:ci-deploy@prod``: whose credentials made the call,
``userIdentity.accountId``), by alias when the config names one, else by the id.

What it misses: an account id the config does not list is still an account (it is labelled by
its id); only aliases must be defined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from pipeline.core.config import Account

_ACCOUNT_ID = re.compile(r"^\d{6,32}$")


def is_account_id(value: str) -> bool:
    """Digits, as ActionTrail writes ``userIdentity.accountId`` (never an alias: aliases may not
    be all digits)."""
    return bool(_ACCOUNT_ID.match(value))


class Accounts:
    """Lookup both ways between account ids and aliases."""

    def __init__(self, accounts: Iterable[Account] = ()):
        self._alias_of = {a.id: a.alias for a in accounts}
        self._id_of = {alias: account_id for account_id, alias in self._alias_of.items()}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """``(id, alias)`` in the config's order."""
        return iter(self._alias_of.items())

    def __len__(self) -> int:
        return len(self._alias_of)

    @property
    def several(self) -> bool:
        """More than one account configured: identities are shown with their home account."""
        return len(self._alias_of) > 1

    @property
    def aliases(self) -> list[str]:
        return list(self._id_of)

    def resolve(self, name: str) -> str | None:
        """An alias or an id -> the account id; None for an alias the config does not define."""
        if name in self._id_of:
            return self._id_of[name]
        return name if is_account_id(name) else None

    def alias(self, account_id: str | None) -> str | None:
        return self._alias_of.get(account_id) if account_id else None

    def label(self, account_id: str | None) -> str:
        """The alias, else the id itself (``?`` when the event carried none)."""
        if not account_id:
            return "?"
        return self._alias_of.get(account_id, account_id)

    def identity(self, identity: str, home: str | None) -> str:
        """``ram-user:ci-deploy`` -> ``ram-user:ci-deploy@prod`` when several accounts are configured
        (and the home account is known); as it is otherwise, so single-account views do not change."""
        if not self.several or not home:
            return identity
        return f"{identity}@{self.label(home)}"
