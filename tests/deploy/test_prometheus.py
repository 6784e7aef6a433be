"""Prometheus against the real console: promtool accepts both /metrics endpoints and the alert
rules; a real Prometheus scrapes the console with a token, answers a query for the demo's
readiness, and every expression of the Grafana dashboard is valid PromQL over what it scraped."""

import json
import shutil
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_http

pytestmark = pytest.mark.slow
DEPLOY = ROOT / "deploy"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        pytest.fail("no promtool here: make test installs Debian's prometheus")
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def token(embedded_console) -> str:
    result = embedded_console.manage(
        "shell",
        "-c",
        "from console.api.models import ApiToken; from django.contrib.auth import get_user_model as g; "
        f"print(ApiToken.issue(g().objects.get(username='{embedded_console.username}'), 'prometheus', 90)[1])",
    )
    return result.stdout.strip().splitlines()[-1]


def test_promtool_accepts_the_metrics_and_the_rules(embedded_console, token):
    wait_http(embedded_console.demo_url + "/health/ready", timeout=90)
    console = httpx.get(embedded_console.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert console.status_code == 200 and "instance_console_instance_ready" in console.text
    for text in (console.text, httpx.get(embedded_console.demo_url + "/metrics").text):
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert rules.returncode == 0 and "SUCCESS: 14 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_the_rules_hold_their_unit_tests():
    """promtool's unit test of the rules: two instances down and needing attention, one on hold, raise
    alerts for the other only; a scrape failing for 5 minutes, a scrape token under 14 days from expiry,
    latency higher since a restart and still higher, and a log's disk nearly full, raise theirs."""
    tested = promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_a_real_prometheus_scrapes_the_console(embedded_console, token, tmp_path):
    if not shutil.which("prometheus"):
        pytest.fail("no prometheus here: make test installs Debian's prometheus")
    port = free_port()
    target = embedded_console.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "instance-console",
                        "metrics_path": "/metrics",
                        "authorization": {"credentials": token},
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)

        def query(expr: str) -> dict:
            return httpx.get(api + "/query", params={"query": expr}, timeout=10).json()

        deadline = time.monotonic() + 60
        ready = []
        while time.monotonic() < deadline and not ready:
            ready = query('instance_console_instance_ready{instance_name="demo"} == 1')["data"]["result"]
            time.sleep(0.5)
        assert ready, (tmp_path / "prometheus.log").read_text()[-2000:]
        targets = httpx.get(api + "/targets").json()["data"]["activeTargets"]
        assert targets[0]["health"] == "up", targets
        # The token (90 days, the default) is far from expiry: the rule that warns of it has nothing.
        expiry = query("instance_console_scrape_token_expiry_timestamp_seconds - time()")["data"]["result"]
        assert len(expiry) == 1 and 89 * 86400 < float(expiry[0]["value"][1]) <= 90 * 86400, expiry
        # The demo runs as a local process: the disk that holds its log is read.
        disk = query('instance_console_instance_log_disk_free_ratio{instance_name="demo"}')["data"]["result"]
        assert len(disk) == 1 and 0 < float(disk[0]["value"][1]) <= 1, disk
        rules = {
            rule["name"]: rule
            for group in httpx.get(api + "/rules").json()["data"]["groups"]
            for rule in group["rules"]
        }
        assert {"ConsoleScrapeFailing", "ScrapeTokenExpiresSoon", "LatencyHigherSinceRestart"} <= set(rules), sorted(
            rules
        )
        assert rules["ScrapeTokenExpiresSoon"]["state"] == "inactive", rules["ScrapeTokenExpiresSoon"]

        dashboard = json.loads((DEPLOY / "grafana" / "instance-console.json").read_text())
        expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        for expr in expressions:
            answer = query(expr.replace("$instance", ".*").replace("$host", ".*"))
            assert answer["status"] == "success", (expr, answer)
        assert len(expressions) >= 19
    finally:
        server.terminate()
        server.wait(20)
