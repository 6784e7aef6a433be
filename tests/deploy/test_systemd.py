"""The systemd units for a deployment without Docker pass `systemd-analyze verify`, with their paths
pointed at this checkout (the units name /opt/instance-console, which a test machine lacks)."""

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "deploy" / "systemd"


def test_the_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("no systemd-analyze here (Debian's systemd package)")
    (tmp_path / "console.env").write_text((UNITS / "console.env.example").read_text())
    (tmp_path / "model.env").write_text("MODEL_PATH=/models/glm\nPORT=8080\n")
    names = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/instance-console", str(ROOT))
        text = text.replace("/etc/instance-console/console.env", str(tmp_path / "console.env"))
        text = text.replace("/etc/glm-inference/%i.env", str(tmp_path / "model.env"))
        text = text.replace("User=console", "User=root").replace("User=inference", "User=root")
        text = text.replace("Group=console", "Group=root").replace("Group=inference", "Group=root")
        name = unit.name.replace("@.service", "@demo.service")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    assert len(names) == 4
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True)
    problems = [
        line
        for line in result.stderr.splitlines()
        if "Failed to" in line or "is not executable" in line or "Unknown key" in line or "Invalid" in line
    ]
    assert result.returncode == 0 and not problems, result.stderr
    for unit in UNITS.glob("*.service"):
        assert "Restart=on-failure" in unit.read_text(), unit.name
