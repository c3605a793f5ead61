"""Every example in the README runs, as written, against the demo's store.

The examples are each ```bash block's lines and the ``$ `` lines of the other blocks. They run in
a copy of the repository's working files where ``trailwarden demo`` ran once (of the
``demo_checkout`` fixture), each in ``bash`` from that root, in the README's order (a suppression
is added before it is removed). A line that cannot run here is skipped for a reason listed in
SKIPPED; a few illustrative values are put in place of the ones this run made (PLACED). Each must
exit 0, or the code in EXIT_CODES.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"

SKIPPED = {  # a fragment of the line -> why it cannot run here
    "pip install": "installs packages (the test runs inside the installed project)",
    "python3 -m venv": "creates a virtual environment",
    "jupyter lab": "opens Jupyter in a browser (tests/test_notebooks.py executes the notebooks)",
    "trailwarden serve": "runs until SIGTERM (tests/test_service.py runs it)",
    "SLACK_BOT_TOKEN=": "needs a Slack token",
    "--source prod-trail": "needs an Alibaba Cloud account (SLS); tests/sources/ uses a local fake",
    "--source history": "needs an Alibaba Cloud account (LookupEvents); tests/sources/ uses a local fake",
    "docker ": "needs a Docker engine (tests/test_deploy.py lints the Dockerfile)",
    "systemctl ": "needs systemd running as init (tests/test_deploy.py verifies the unit)",
    "crontab ": "installs a cron job",
    "aliyun ": "needs an Alibaba Cloud account (the aliyun CLI)",
    "trailwarden.env": "writes a deployment's secrets file",
}
EXIT_CODES = {"trailwarden --config bad.yaml status": 2}  # a documented failure
SETUP = {"bad.yaml": "sources:\n  - {name: archive, type: files}\n"}  # the invalid config it shows


@dataclass
class Example:
    line: int
    command: str
    shown: list[str]  # the output the README shows under it ($ blocks)


def examples(text: str) -> list[Example]:
    """The README's commands, continuation lines joined, in order."""
    found: list[Example] = []
    lines = text.splitlines()
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            i += 1
            continue
        prompt = fence == "" and line.startswith("$ ")
        if (fence == "bash" and line.strip() and not line.lstrip().startswith("#")) or prompt:
            start = i
            command = line[2:] if prompt else line
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i].strip()
            shown = []
            while prompt and i + 1 < len(lines) and not lines[i + 1].startswith(("$ ", "```")):
                i += 1
                shown.append(lines[i])
            found.append(Example(start + 1, command.strip(), shown))
        i += 1
    return found


def _skip_reason(command: str) -> str | None:
    return next((why for fragment, why in SKIPPED.items() if fragment in command), None)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRAILWARDEN_CONFIG", "SLACK_BOT_TOKEN") and not k.startswith("ALIBABA_CLOUD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the installed `trailwarden`
    env["TRAILWARDEN_USER"] = "readme-test"
    return env


def _finding_ids(root: Path) -> list[str]:
    out = subprocess.run(["trailwarden", "findings", "--format", "csv"], cwd=root, env=_env(),
                         capture_output=True, text=True, check=True).stdout
    return [row.split(",", 1)[0] for row in out.splitlines()[1:]]


def test_the_readme_shows_examples_of_every_kind():
    found = examples(README.read_text(encoding="utf-8"))
    commands = " ".join(e.command for e in found)
    for needed in ("trailwarden demo", "trailwarden status", "trailwarden ingest --file", "trailwarden replay",
                   "trailwarden least-privilege", "trailwarden suppress add", "trailwarden backtest"):
        assert needed in commands
    assert all("--db data/demo.duckdb" not in e.command for e in found)  # the demo's store is the default


@pytest.mark.slow
def test_every_readme_example_runs_verbatim_on_the_demo_store(demo_checkout: Path, tmp_path: Path):
    root = tmp_path / "checkout"  # the examples write (suppressions, ingest...): a copy of the shared one
    shutil.copytree(demo_checkout, root)
    for name, text in SETUP.items():
        (root / name).write_text(text, encoding="utf-8")
    ids = _finding_ids(root)
    assert len(ids) >= 2, "the demo raised findings to triage"
    # README ids are illustrative (finding ids depend on the day the demo ran; suppression ids
    # are random): each is replaced by one this run has
    placed = {"3df22d5f1e": ids[0][:10], "8b633f28a0": ids[1][:10]}
    failures, ran, skipped = [], 0, []
    for ex in examples(README.read_text(encoding="utf-8")):
        why = _skip_reason(ex.command)
        if why:
            skipped.append((ex.line, why))
            continue
        command = ex.command
        for shown, real in placed.items():
            command = command.replace(shown, real)
        result = subprocess.run(["bash", "-c", command], cwd=root, env=_env(), capture_output=True,
                                text=True, timeout=300, check=False)
        ran += 1
        expected = EXIT_CODES.get(ex.command, 0)
        if result.returncode != expected:
            failures.append(f"README line {ex.line}: `{command}` exited {result.returncode} (expected {expected}): "
                            f"{result.stderr.strip()[-500:]}")
            continue
        if expected and ex.shown:  # a documented error is the line the README shows
            assert result.stderr.strip() == ex.shown[0].strip(), (ex.line, result.stderr)
        made = re.search(r"^(sup-[0-9a-f]{8}):", result.stdout, flags=re.M)
        shown_id = next((re.match(r"(sup-[0-9a-f]{8}):", s) for s in ex.shown if s.startswith("sup-")), None)
        if made and shown_id:
            placed[shown_id[1]] = made[1]
    assert not failures, "\n".join(failures)
    assert ran >= 20, (ran, skipped)
