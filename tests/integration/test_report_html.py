"""``run --dry-run --format html``: the page rendered in a real headless Chromium.

A dry-run over a real Dovecot account writes the page; Chromium loads it from a file
(no network: the page has a CSP that forbids every fetch) and ``--dump-dom`` prints the
DOM after the inline script ran. Checked on the rendered page: the usage bar with the
levels, one chart bar per (folder, rule) with the report's counts, one table row per
planned message, the script's "N of N shown" (so it ran), and the filter from the URL
(``#filter=Trash``) hiding every other row. Without Chromium the test skips, except under
CI=true where it fails (``scripts/install-deps.sh`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago

MiB = 1024 * 1024


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail("CI=true but chromium is not installed (scripts/install-deps.sh)",
                        pytrace=False)
        pytest.skip("chromium is not installed")
    return found


def dump_dom(page: Path, tmp: Path, fragment: str = "") -> str:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--dump-dom",
         page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("mail_user", [1 * MiB], indirect=True)
def test_html_report_renders_in_chromium(tmp_path: Path, mail_user: MailUser) -> None:
    pol = {"p": {"protect": [], "quota": {"warn_above": "70%", "clean_above": "80%",
                                          "clean_to": "60%"}, "rules": [
        {"name": "trash", "folders": ["\\Trash"], "older_than": "30d", "age_by": "received",
         "action": "delete"},
        {"name": "full", "when": "over_quota", "folders": ["INBOX"], "action": "delete"}]}}
    pf = PolicyFile(tmp_path, pol)
    name = pf.add_imap(mail_user)
    mail_user.seed("Trash", [SeedMessage(received=ago(days=60 + i), size=20_000,
                                         subject=f"t{i}") for i in range(4)])
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=100 + i), size=100_000,
                                         subject=f"<b>i{i}</b>") for i in range(8)],
                   recalc_quota=True)
    report = pf.run(dry_run=True).account(name)
    planned = [a for a in report["actions"] if a["result"] == "planned"]
    assert {a["rule"] for a in planned} == {"trash", "full"}

    page = tmp_path / "report.html"
    out = pf.run(dry_run=True, fmt="html", output=page)
    assert out.code == 0, out
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "<b>i0</b>" not in html  # message data is escaped

    dom = dump_dom(page, tmp_path)
    assert 'data-ready="1"' in dom  # the inline script ran
    section = re.search(rf'<section class="account" id="account-{re.escape(name)}".*?</section>',
                        dom, re.S)
    assert section is not None
    sec = section.group(0)
    bar = re.search(r'<svg class="usage-bar"[^>]*data-now="([\d.]+)" data-after="([\d.]+)"', sec)
    assert bar is not None
    now, after = float(bar.group(1)), float(bar.group(2))
    assert now == pytest.approx(100 * report["usage_bytes"] / report["limit_bytes"], abs=0.1)
    assert after == pytest.approx(
        100 * report["usage_after_bytes"] / report["limit_bytes"], abs=0.1)
    for level in ("warn", "clean", "clean_to"):
        assert f'class="level-{level}"' in sec
    bars = {(m.group(1), m.group(2)): int(m.group(3)) for m in re.finditer(
        r'<g class="bar" data-folder="([^"]*)" data-rule="([^"]*)" data-count="(\d+)"', sec)}
    assert bars == dict(Counter((a["folder"], a["rule"]) for a in planned))
    rows = re.findall(r'<tr data-folder="([^"]*)" data-rule="([^"]*)"( hidden="")?>', sec)
    assert len(rows) == len(report["actions"])
    assert f"{len(rows)} of {len(rows)} shown" in sec

    filtered = dump_dom(page, tmp_path, "#filter=Trash")
    sec2 = re.search(rf'id="account-{re.escape(name)}".*?</section>', filtered, re.S)
    assert sec2 is not None
    rows2 = re.findall(r'<tr data-folder="([^"]*)" data-rule="[^"]*"( hidden="")?>',
                       sec2.group(0))
    visible = [f for f, hidden in rows2 if not hidden]
    assert visible and set(visible) == {"Trash"}
    assert f"{len(visible)} of {len(rows2)} shown" in sec2.group(0)


def test_html_report_of_an_unreachable_account(tmp_path: Path, require_dovecot: Any) -> None:
    """A failing account still gets its section (status and error), no chart, no crash."""
    pf = PolicyFile(tmp_path, {"p": {"rules": []}})
    pf.accounts.append({"name": "down", "host": "127.0.0.1", "port": 1, "security": "tls",
                        "username": "x", "password_env": "RT_DOWN_PW", "policy": "p",
                        "timeout": "5s"})
    pf.env["RT_DOWN_PW"] = "x"
    pf.write()
    page = tmp_path / "r.html"
    out = pf.run(dry_run=True, fmt="html", output=page)
    assert out.code == 1
    dom = dump_dom(page, tmp_path)
    assert 'data-status="error"' in dom and "connection refused" in dom
