"""`status` as text."""

from __future__ import annotations

from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import render, to_jsonable


def status_text(info: dict[str, Any]) -> str:
    from pipeline.service.status import human_duration

    j = to_jsonable
    lines = [
        f"store       {info['database']} ({info['database_bytes'] / 2**20:.1f} MiB, schema v{info['schema_version']})",
        f"events      {info['events']:,} from {info['agents']:,} agents"
        + (f", {j(info['first_event'])} .. {j(info['last_event'])}" if info["events"] else ""),
        f"files       {info['files_ingested']:,} ingested",
        *_lake_lines(info.get("lake")),
        f"quarantine  {info['quarantined']:,}"
        + "".join(f"\n              {r['count']:,} {one_line(r['reason'])}" for r in info["quarantine_reasons"])
        + more_reasons(info),
        "",
    ]
    if info["sources"]:
        lines.append(render(["source", "partition", "cursor_time", "watermark", "lag", "events", "last_hour",
                             "updated_at", "last_error"],
                            [[s["source"], s["partition"], s["cursor_time"], s["watermark"],
                              human_duration(s["lag_seconds"]), s["events"],
                              s["events_last_hour"], s["updated_at"], s["last_error"]] for s in info["sources"]],
                            "table", keys=2))
        lines.append("")
    service = info.get("service") or {}
    if service.get("steps"):
        lines.append(render(["step", "last_run", "status", "seconds", "error"],
                            [[x["step"], x["last_run"], x["status"], x["seconds"], x["error"]]
                             for x in service["steps"]], "table"))
        lines.append("")
    lines.append(f"alerts      {service.get('pending_alerts', 0):,} pending"
                 + (f" for {one_line(service['alert_destination'])}" if service.get("alert_destination") else ""))
    if service.get("slack_triage"):
        triage = service["slack_triage"]
        lines.append(f"triage      Slack app {one_line(str(triage.get('state')))} at {one_line(str(triage.get('at')))}"
                     + (f": {one_line(str(triage['error']))}" if triage.get("error") else "")
                     + (f"; {triage['waiting']} press(es) wait for the next cycle" if triage.get("waiting") else ""))
    if service.get("snapshot"):
        snap = service["snapshot"]
        lines.append(f"snapshot    {snap['path']} ({snap['age_seconds']:.0f}s old)")
    lines.extend(ram_lines(info.get("ram")))
    lines.extend(account_lines(info.get("accounts")))
    lines.append("")
    if info["recent_runs"]:
        lines.append(render(["run", "command", "started_at", "status", "error"],
                            [[r["id"], r["command"], r["started_at"], r["status"], r["error"]]
                             for r in info["recent_runs"]], "table"))
    return "\n".join(lines).rstrip()


def ram_lines(ram: dict[str, Any] | None) -> list[str]:
    """The last RAM snapshot (``ram sync``) and the calls that failed in it."""
    if not ram:  # RAM is not read (no `ram sync` yet): nothing to say
        return []
    lines = [f"ram         snapshot {ram['snapshot']} at {to_jsonable(ram['taken_at'])} ({ram['source']}): "
             f"{ram['users']:,} users, {ram['roles']:,} roles, {ram['policies']:,} policies, "
             f"{ram['access_keys']:,} AccessKeys; {ram['errors']:,} call(s) failed"]
    lines += [f"              {one_line(e['principal'])} {e['call']}: {one_line(e['code'])}"
              for e in ram["first_errors"]]
    if ram["errors"] > len(ram["first_errors"]):
        more = ram["errors"] - len(ram["first_errors"])
        lines.append(f"              … and {more:,} more (`trailwarden query` the table ram_sync_errors, "
                     f"snapshot_id {ram['snapshot']})")
    return lines


def account_lines(accounts: list[dict[str, Any]] | None) -> list[str]:
    """The last event per account, and the accounts whose events stopped (configured accounts
    only: without `accounts:` nothing is said)."""
    if accounts is None:
        return []
    lines: list[str] = []
    for a in accounts:
        name = f"{a['alias']} ({a['id']})" if a["alias"] else f"{a['id']} (not configured)"
        last = to_jsonable(a["last_event"]) if a["last_event"] else "never"
        lines.append(f"{'accounts' if not lines else '':<12}{name}: last event {last}"
                     + (f" - GAP, {one_line(a['gap'])}" if a["gap"] else ""))
    return lines


def more_reasons(info: dict[str, Any]) -> str:
    more = info["quarantine_reason_kinds"] - len(info["quarantine_reasons"])
    if more <= 0:
        return ""
    return f"\n              … and {more:,} more kind{'s' if more != 1 else ''} of reason ({ALL_REASONS})"


ALL_REASONS = 'trailwarden query "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY n DESC"'


def _lake_lines(lake: dict[str, Any] | None) -> list[str]:
    """The sealed tier, when there is one: days, files, bytes, and the days that are unavailable."""
    if not lake or not lake["files"]:
        return []
    line = (f"sealed      {lake['sealed_days']:,} days ({lake['first_day']} .. {lake['last_day']}) in "
            f"{lake['files']:,} Parquet files, {lake['sealed_bytes'] / 2**20:.1f} MiB; {lake['hot_events']:,} events hot")
    if lake["unavailable_days"]:
        reasons = "; ".join(sorted({u["reason"] for u in lake["unavailable"]}))
        line += (f"\n              UNAVAILABLE: {', '.join(lake['unavailable_days'])} ({reasons}: files under "
                 f"{lake['dir']}; events leaves these days out until they are restored)")
    return [line]
