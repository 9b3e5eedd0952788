"""Shadow traffic: a copy of a request scored on the challenger in the background (never
awaited by the request), compared with the champion's answer in Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from specml.runtime.serving.metrics import ServingMetrics
from specml.runtime.serving.roles import ModelSlot

MAX_MIRRORS_IN_FLIGHT = 256
log = logging.getLogger("specml.serving")


class ShadowMirror:
    """Mirrors requests to the challenger, at most MAX_MIRRORS_IN_FLIGHT at once (else dropped)."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics
        self._mirrors: set[asyncio.Task[None]] = set()

    def mirror(
        self,
        champion: ModelSlot,
        challenger: ModelSlot,
        features: dict[str, Any],
        answer: dict[str, Any],
        champion_seconds: float,
    ) -> None:
        """Shadow: score a copy on the challenger in the background and compare (never awaited)."""
        labels = (champion.model.name, champion.version, challenger.version)
        if len(self._mirrors) >= MAX_MIRRORS_IN_FLIGHT:
            self.metrics.shadow_requests.labels(*labels, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(labels, challenger, features, answer, champion_seconds)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _shadow(
        self,
        labels: tuple[str, str, str],
        challenger: ModelSlot,
        features: Any,
        answer: dict[str, Any],
        champion_seconds: float,
    ) -> None:
        m = self.metrics
        start = time.perf_counter()
        try:
            results = await challenger.score(features)
        except Exception:
            challenger.count("shadow", 500, time.perf_counter() - start)
            m.shadow_requests.labels(*labels, "failed").inc()
            return
        elapsed = time.perf_counter() - start
        challenger.count("shadow", 200, elapsed)
        m.shadow_requests.labels(*labels, "compared").inc()
        m.shadow_latency_delta.labels(*labels).observe(elapsed - champion_seconds)
        try:
            self._compare(labels, challenger.model.manifest.output_name, answer, results)
            self._agreement(labels, answer, results)
        except Exception:  # a comparison bug must not go unnoticed, nor hurt serving
            log.exception("shadow comparison failed")

    def _compare(
        self,
        labels: tuple[str, str, str],
        name: str,
        answer: dict[str, Any],
        results: dict[str, Any],
    ) -> None:
        m = self.metrics
        ours, theirs = np.asarray(answer[name]), np.asarray(results[name])
        if ours.shape != theirs.shape:
            return
        m.shadow_diff.labels(*labels).observe(
            float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
        )

    def _agreement(
        self, labels: tuple[str, str, str], answer: dict[str, Any], results: dict[str, Any]
    ) -> None:
        """Rows where both models predict the same class (their `label` outputs)."""
        ours, theirs = answer.get("label"), results.get("label")
        if ours is None or theirs is None or ours.shape != theirs.shape:
            return
        agree = int(np.count_nonzero(ours == theirs))
        m = self.metrics
        m.shadow_rows.labels(*labels, "true").inc(agree)
        m.shadow_rows.labels(*labels, "false").inc(ours.shape[0] - agree)
