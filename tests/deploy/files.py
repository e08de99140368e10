"""The deployment files under test: paths, YAML reading and `kubectl kustomize` rendering."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
OBSERVABILITY = DEPLOY / "observability"
# Kinds of the Prometheus Operator's CRDs, which kubernetes-validate has no schema for.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def tool(name: str, install_hint: str) -> str:
    """The path of a command-line tool the deployment checks need; fail (never skip) without."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not on PATH ({install_hint}): the deploy checks need it")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    """The manifests of one overlay as `kubectl kustomize` renders them (offline)."""
    kubectl = tool("kubectl", "it renders the kustomize overlays offline")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of `kind` (and `name`) among `docs`."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def read_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))
