"""The alert rules as Prometheus reads them: `promtool check rules` and `promtool test rules`.

promtool comes with the Debian package ``prometheus`` (.ci/run installs it); the test fails,
rather than skips, without it: the rules are part of what is shipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "failover-rules.yml"
RULE_TESTS = RULES_DIR / "failover-rules.test.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: apt-get install prometheus (see .ci/run)"
    return found


def _alerts() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_rule_unit_tests_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    cases: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts, "no alerts found"
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"
