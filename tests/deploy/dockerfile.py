"""A small reader of the Dockerfile's instructions (continuations joined, comments dropped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case) and the rest of its line."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (fails on the shell form)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + 3 :]
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(part) for part in value]


def instructions(path: Path) -> list[Instruction]:
    """Every instruction of a Dockerfile, in order."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
    return found


def env_of(items: list[Instruction]) -> dict[str, str]:
    """The ENV key=value pairs of the final stage."""
    last_from = max(i for i, item in enumerate(items) if item.keyword == "FROM")
    env: dict[str, str] = {}
    for item in items[last_from:]:
        if item.keyword == "ENV":
            for pair in item.args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
