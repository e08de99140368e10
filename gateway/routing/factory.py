"""Builds the configured router."""

from __future__ import annotations

import random

from gateway.routing.baselines import LeastLoadedRouter, RoundRobinRouter, ThresholdRouter
from gateway.routing.scheduler import ProfileRouter
from gateway.routing.types import Router
from gateway.settings import RoutingSettings


def build_router(settings: RoutingSettings, rng: random.Random | None = None) -> Router:
    """The router named by `routing.policy`."""
    rng = rng if rng is not None else random.Random()
    if settings.policy == "round_robin":
        return RoundRobinRouter()
    if settings.policy == "least_loaded":
        return LeastLoadedRouter(rng)
    if settings.policy == "sglang_threshold":
        return ThresholdRouter(settings.threshold, rng)
    return ProfileRouter.from_settings(settings.profile, settings.profiles[settings.profile], rng)
