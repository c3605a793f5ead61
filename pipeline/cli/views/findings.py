"""One finding in full (`findings show`): JSON, or lines a person reads."""

from __future__ import annotations

import json
from typing import Any

from models.accounts import Accounts
from pipeline.core.inert import one_line
from pipeline.core.output import json_text, to_jsonable


def finding_text(finding: dict[str, Any], fmt: str, *, several_accounts: bool = False) -> str:
    """JSON: every field; table: the head line, summary, span (and the account its events happened
    in, when several are configured), suppression, evidence and the status history, each line
    inert (event values)."""
    if fmt == "json":
        return json_text(to_jsonable(finding), indent=2)
    lines = [f"{finding['id']}  {finding['severity']}  {finding['detector']}  {finding['agent']}  [{finding['status']}]",
             finding["summary"],
             f"seen {to_jsonable(finding['first_seen'])} .. {to_jsonable(finding['last_seen'])}, "
             f"{finding['event_count']} events"
             + (f" in account {finding['account']}" if several_accounts and finding.get("account") else "")]
    if finding.get("origin_agent"):
        lines.append(f"through role sessions started by {finding['origin_agent']}"
                     + (f" (account {finding['origin_account']})" if finding.get("origin_account") else "")
                     + (f": {' -> '.join(finding['chain'])}" if finding.get("chain") else ""))
    if finding["suppression_id"]:
        lines.append(f"suppressed by {finding['suppression_id']} (`trailwarden suppress list --all`)")
    if finding["previous_id"]:
        lines.append(f"fires again after resolved finding {finding['previous_id']}")
    lines += ["", "evidence:"] + [f"  {k}: {json.dumps(v, default=str)}" for k, v in finding["evidence"].items()]
    lines += ["", "history:"]
    lines += [f"  {to_jsonable(h['changed_at'])}  {h['old_status']} -> {h['new_status']}  by {h['changed_by']}: "
              f"{h['reason']}" for h in finding["history"]] or ["  (never triaged)"]
    return "\n".join(one_line(line) for line in lines)


def labelled(finding: dict[str, Any], accounts: Accounts, registered: set[str]) -> dict[str, Any]:
    """The finding as people read it: its accounts by alias (else the id), and a raw identity
    (an unregistered agent) with its home account when several accounts are configured."""
    home = finding.get("home_account")
    if finding["agent"] not in registered:
        finding["agent"] = accounts.identity(finding["agent"], home)
    for key in ("account", "home_account"):
        if finding.get(key):
            finding[key] = accounts.label(finding[key])
    return finding
