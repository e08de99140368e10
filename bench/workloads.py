"""The benchmark's synthetic workloads (a), (b), (d), (e): timed chat requests from a seed."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bench.text import PseudoText

Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request: nominal arrival (simulated seconds), chat messages, answer length.

    Requests of one `session` (>= 0) are sent in `turn` order: turn 0 arrives at `at`, every
    later turn `think` seconds after the previous turn's answer ended (so `at` of a later turn
    is only its nominal time, used for offline replays and for calibrating the rate).
    """

    rid: int
    at: float
    messages: tuple[Message, ...]
    max_tokens: int
    session: int = -1
    turn: int = 0
    think: float = 0.0
    group: int = -1

    @property
    def follows(self) -> bool:
        """True when this request waits for the previous turn of its session."""
        return self.session >= 0 and self.turn > 0


@dataclass(frozen=True, slots=True)
class Workload:
    """A named, ordered list of requests plus a one-line description of how it was made."""

    name: str
    title: str
    requests: tuple[BenchRequest, ...]
    description: str

    @property
    def span(self) -> float:
        """Nominal time of the last arrival (simulated seconds)."""
        return max((r.at for r in self.requests), default=0.0)

    def retimed(self, factor: float, service_s: float) -> Workload:
        """Stretch arrival gaps and think times by `factor`; follow-ups also wait `service_s`."""
        last_end: dict[int, float] = {}
        out: list[BenchRequest] = []
        for r in sorted(self.requests, key=lambda q: (q.session, q.turn) if q.follows else (-1, 0)):
            if r.follows:
                think = r.think * factor
                at = last_end[r.session] + think
                r = dataclasses.replace(r, at=at, think=think)
            else:
                r = dataclasses.replace(r, at=r.at * factor)
            if r.session >= 0:
                last_end[r.session] = r.at + service_s
            out.append(r)
        out.sort(key=lambda q: (q.at, q.rid))
        return dataclasses.replace(self, requests=tuple(out))


def poisson_times(rng: random.Random, n: int, rate: float = 1.0) -> list[float]:
    """`n` arrival times of a Poisson process of `rate` per second, starting at 0."""
    times: list[float] = []
    t = 0.0
    for i in range(n):
        if i:
            t += rng.expovariate(rate)
        times.append(t)
    return times


def shared_prefix_groups(
    text: PseudoText,
    seed: int,
    *,
    groups: int = 64,
    per_group: int = 16,
    system_tokens: int = 2048,
    question_tokens: int = 128,
    max_tokens: int = 32,
    rate: float = 40.0,
) -> Workload:
    """(a) groups of prompts sharing a long system prompt, in shuffled order, Poisson arrivals."""
    rng = random.Random(f"{seed}:a")
    pairs = [(g, q) for g in range(groups) for q in range(per_group)]
    rng.shuffle(pairs)
    times = poisson_times(rng, len(pairs), rate)
    requests = tuple(
        _group_request(text, "a", i, t, g, q, system_tokens, question_tokens, max_tokens)
        for i, ((g, q), t) in enumerate(zip(pairs, times, strict=True))
    )
    desc = (
        f"{groups} groups x {per_group} prompts: {system_tokens}-token shared system prompt + "
        f"{question_tokens}-token question, shuffled, Poisson arrivals at {rate:g}/s, "
        f"max_tokens {max_tokens}"
    )
    return Workload("a", "shared-prefix groups", requests, desc)


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Normalised Zipf popularities of ranks 1..n."""
    raw = [k**-exponent for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def zipf_groups(
    text: PseudoText,
    seed: int,
    *,
    groups: int = 16,
    requests: int = 1024,
    exponent: float = 1.1,
    system_tokens: int = 1024,
    question_tokens: int = 512,
    max_tokens: int = 32,
    rate: float = 40.0,
) -> Workload:
    """(e) shared-prefix groups whose popularity follows a Zipf law; group 0 is the hottest."""
    rng = random.Random(f"{seed}:e")
    weights = zipf_weights(groups, exponent)
    chosen = rng.choices(range(groups), weights=weights, k=requests)
    times = poisson_times(rng, requests, rate)
    counts = [0] * groups
    out: list[BenchRequest] = []
    for i, (g, t) in enumerate(zip(chosen, times, strict=True)):
        out.append(
            _group_request(
                text, "e", i, t, g, counts[g], system_tokens, question_tokens, max_tokens
            )
        )
        counts[g] += 1
    desc = (
        f"{requests} prompts over {groups} groups with Zipf({exponent}) popularity (hottest "
        f"{weights[0]:.0%}): {system_tokens}-token shared prefix + {question_tokens}-token "
        f"question, Poisson arrivals at {rate:g}/s, max_tokens {max_tokens}"
    )
    return Workload("e", "hot prefixes (Zipf)", tuple(out), desc)


def _group_request(
    text: PseudoText,
    tag: str,
    rid: int,
    at: float,
    group: int,
    index: int,
    system_tokens: int,
    question_tokens: int,
    max_tokens: int,
) -> BenchRequest:
    messages = (
        {"role": "system", "content": text.text(f"{tag}:system:{group}", system_tokens)},
        {"role": "user", "content": text.text(f"{tag}:question:{group}:{index}", question_tokens)},
    )
    return BenchRequest(rid, at, messages, max_tokens, group=group)


@dataclass(frozen=True, slots=True)
class SessionShape:
    """Sizes of a multi-turn workload (tokens are simulator tokens)."""

    sessions: int
    turns: int
    first_user_tokens: tuple[int, int]
    user_tokens: tuple[int, int]
    assistant_tokens: tuple[int, int]
    think_mean: float = 1.0
    start_window: float = 16.0
    max_tokens: int = 32


def conversations(text: PseudoText, seed: int, shape: SessionShape) -> Workload:
    """(b) multi-turn conversations; each turn resends the whole history."""
    rng = random.Random(f"{seed}:b")
    requests = _sessions(text, rng, "b", shape, system=None)
    desc = (
        f"{shape.sessions} conversations x {shape.turns} turns, first message "
        f"{_span(shape.first_user_tokens)} tokens, then user {_span(shape.user_tokens)} + "
        f"assistant {_span(shape.assistant_tokens)} tokens per turn, whole history resent, "
        f"starts Poisson over {shape.start_window:g} s, next turn = previous answer + exponential "
        f"think time (mean {shape.think_mean:g} s), max_tokens {shape.max_tokens}"
    )
    return Workload("b", "multi-turn conversations", requests, desc)


def shared_system_users(
    text: PseudoText, seed: int, shape: SessionShape, system_tokens: int = 2048
) -> Workload:
    """(d) one system prompt starts every request, followed by each user's growing history."""
    rng = random.Random(f"{seed}:d")
    system = text.text("d:system", system_tokens)
    requests = _sessions(text, rng, "d", shape, system=system)
    desc = (
        f"one {system_tokens}-token system prompt for all, then {shape.sessions} users x "
        f"{shape.turns} turns (user {_span(shape.user_tokens)} + assistant "
        f"{_span(shape.assistant_tokens)} tokens per turn, history resent), starts Poisson over "
        f"{shape.start_window:g} s, think time mean {shape.think_mean:g} s, "
        f"max_tokens {shape.max_tokens}"
    )
    return Workload("d", "shared system prompt + per-user histories", requests, desc)


def _sessions(
    text: PseudoText, rng: random.Random, tag: str, shape: SessionShape, system: str | None
) -> tuple[BenchRequest, ...]:
    rate = shape.sessions / shape.start_window if shape.start_window > 0 else 1e9
    starts = poisson_times(rng, shape.sessions, rate)
    out: list[BenchRequest] = []
    rid = 0
    for s, start in enumerate(starts):
        history: list[Message] = [] if system is None else [{"role": "system", "content": system}]
        at = start
        for turn in range(shape.turns):
            size = shape.first_user_tokens if turn == 0 else shape.user_tokens
            user = text.text(f"{tag}:user:{s}:{turn}", rng.randint(*size))
            history.append({"role": "user", "content": user})
            think = 0.0 if turn == 0 else rng.expovariate(1.0 / shape.think_mean)
            at += think
            out.append(BenchRequest(rid, at, tuple(history), shape.max_tokens, s, turn, think))
            rid += 1
            answer = text.text(f"{tag}:assistant:{s}:{turn}", rng.randint(*shape.assistant_tokens))
            history = [*history, {"role": "assistant", "content": answer}]
    out.sort(key=lambda r: (r.at, r.rid))
    return tuple(out)


def _span(bounds: tuple[int, int]) -> str:
    return f"{bounds[0]}-{bounds[1]}"


def check_ordered(requests: Sequence[BenchRequest]) -> None:
    """Raise ValueError unless requests are sorted by time and sessions by turn."""
    last_turn: dict[int, int] = {}
    for a, b in itertools.pairwise(requests):
        if b.at < a.at:
            raise ValueError(f"request {b.rid} arrives before {a.rid}")
    for r in requests:
        if r.session >= 0:
            if last_turn.get(r.session, -1) != r.turn - 1:
                raise ValueError(f"session {r.session} turn {r.turn} out of order")
            last_turn[r.session] = r.turn
