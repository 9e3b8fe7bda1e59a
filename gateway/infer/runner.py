"""The model runner: cuts windows on the event loop, runs models in one worker thread.

Data path: :meth:`ModelRunner.on_batch` is called by the runtime after every driver batch has gone
into the point table. It only does bookkeeping and copies the due windows out of the ring
buffers (interpolating resampled ones); features and ``invoke()`` run in the worker thread, which
drains a bounded queue per model (oldest window dropped and counted when full), runs up to
``batch`` windows per invoke, and hands the outputs back to the loop with
``call_soon_threadsafe``. The loop turns them into a :class:`SampleBatch` of the output points
stamped with each window's end time and feeds it through the same path as driver data, so rules,
the uplink and other models see model outputs like any other point.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.config import ModelConfig
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.infer.backend import RuntimeUnavailable, load_backend
from gateway.infer.features import resample
from gateway.infer.model import LoadedModel, ModelError

_log = logging.getLogger("gateway.infer")
LATENCY_KEEP = 1024
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ModelStats:
    windows: int = 0  # windows queued
    invocations: int = 0  # invoke() calls (a call may carry several windows)
    inferred: int = 0  # windows through the model
    dropped: int = 0  # windows dropped because the queue was full
    skipped: int = 0  # windows not cut: gap in the data or not enough history
    errors: int = 0
    swaps: int = 0
    latency: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_KEEP)
    )  # seconds per invoke (features included)
    #: Since start, for the Prometheus histogram: counts per LATENCY_BUCKETS bound (+Inf last).
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.latency.append(seconds)
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def percentiles(self) -> tuple[float, float]:
        if not self.latency:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.fromiter(self.latency, np.float64), [50, 99])
        return float(p50), float(p99)


class ModelSlot:
    """One configured model: its window clock, queue, current :class:`LoadedModel` and stats."""

    def __init__(self, config: ModelConfig, points: PointTable) -> None:
        self.config = config
        self.inputs = [points.id_of(p) for p in config.inputs]
        self.output_ids = np.array([points.id_of(p) for p in config.output_points()], np.uint32)
        self.model: LoadedModel | None = None
        self.state = "disabled" if not config.enabled else "loading"
        self.reason = "enabled: false" if not config.enabled else ""
        self.queue: collections.deque[tuple[float, npt.NDArray[np.float64]]] = collections.deque()
        self.stats = ModelStats()
        self.lock = threading.Lock()  # held while the model runs and while it is swapped
        w = config.window
        self.span = (w.length - 1) / w.rate if w.rate else 0.0
        self.hop_s = w.hop / w.rate if w.rate else 0.0
        self.next_end: float | None = None  # resampled windows: end time of the next one
        self.new_samples = 0  # raw windows: samples of input 0 since the last window

    @property
    def running(self) -> bool:
        return self.state == "running"


class ModelRunner:
    """Every configured model, one worker thread.

    Parameters
    ----------
    configs : the ``models:`` of the config.
    points : the point table (inputs and output points must already be in it).
    deliver : called on the event loop with each batch of output samples.
    on_problem : called with ``(model, message)`` when a model is disabled or a swap fails, so
        the runtime can raise an alarm.
    """

    def __init__(
        self,
        configs: tuple[ModelConfig, ...],
        points: PointTable,
        deliver: Callable[[SampleBatch], None],
        on_problem: Callable[[str, str], None] = lambda model, message: None,
    ) -> None:
        self.points = points
        self.slots = {c.name: ModelSlot(c, points) for c in configs}
        self._deliver = deliver
        self._on_problem = on_problem
        self._by_input: dict[int, list[ModelSlot]] = {}
        for slot in self.slots.values():
            for pid in set(slot.inputs):
                self._by_input.setdefault(pid, []).append(slot)
        self._is_input = np.zeros(len(points), bool)
        self._is_input[list(self._by_input)] = True
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load, verify and self-test every enabled model; problems disable that model only."""
        wanted = [s for s in self.slots.values() if s.config.enabled]
        if not wanted:
            return
        try:
            backend = load_backend()
        except RuntimeUnavailable as exc:
            entries = ", ".join(f"models '{s.config.name}' ({s.config.source})" for s in wanted)
            for slot in wanted:
                self._disable(slot, f"needs a TFLite interpreter: {exc}", alarm=False)
            _log.warning("%s need the ML extra and are disabled: %s", entries, exc)
            self._on_problem("models", f"{entries} disabled: {exc}")
            return
        _log.info("TFLite runtime: %s %s", backend.name, backend.version)
        for slot in wanted:
            try:
                model = LoadedModel.load(slot.config)
                summary = model.self_test()
            except ModelError as exc:
                self._disable(slot, str(exc))
                continue
            slot.model, slot.state, slot.reason = model, "running", ""
            _log.info("model %s loaded (%s, %s): %s", slot.config.name, model.file,
                      model.delegate, summary)  # fmt: skip

    def _disable(self, slot: ModelSlot, reason: str, alarm: bool = True) -> None:
        slot.state, slot.reason, slot.model = "disabled", reason, None
        if alarm:
            _log.error("model %s disabled: %s", slot.config.name, reason)
            self._on_problem(slot.config.name, reason)

    def start(self, loop: asyncio.AbstractEventLoop | None = None, *, thread: bool = True) -> None:
        """Load the models and start the worker (``thread=False``: call :meth:`run_pending`)."""
        self._loop = loop
        self.load_all()
        if thread and any(s.running for s in self.slots.values()):
            self._stop = False
            self._thread = threading.Thread(target=self._work, name="gateway-infer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- event loop side -----------------------------------------------------------------------
    def on_batch(self, batch: SampleBatch) -> None:
        """Queue the windows that the samples of ``batch`` completed."""
        if not self._by_input or not len(batch):
            return
        ids = batch.point_ids
        hit = self._is_input[ids]
        if not hit.any():
            return
        touched: dict[str, ModelSlot] = {}
        for pid in np.unique(ids[hit]).tolist():
            for slot in self._by_input[pid]:
                if slot.running:
                    touched[slot.config.name] = slot
                    if slot.config.window.rate is None and pid == slot.inputs[0]:
                        good = batch.quality[ids == pid] == Quality.GOOD
                        slot.new_samples += int(np.count_nonzero(good))
        queued = False
        for slot in touched.values():
            queued |= self._cut(slot)
        if queued:
            with self._cv:
                self._cv.notify()

    def _cut(self, slot: ModelSlot) -> bool:
        windows = (
            self._cut_raw(slot) if slot.config.window.rate is None else self._cut_resampled(slot)
        )
        if not windows:
            return False
        cap = slot.config.queue
        with self._cv:
            for item in windows:
                if len(slot.queue) >= cap:
                    slot.queue.popleft()
                    slot.stats.dropped += 1
                slot.queue.append(item)
                slot.stats.windows += 1
        return True

    def _cut_raw(self, slot: ModelSlot) -> list[tuple[float, npt.NDArray[np.float64]]]:
        w = slot.config.window
        out = []
        rings = [self.points.rings[pid] for pid in slot.inputs]
        while slot.new_samples >= w.hop:
            back = slot.new_samples - w.hop  # samples newer than this window's end
            slot.new_samples -= w.hop
            cols: list[npt.NDArray[np.float64]] = []
            t_end = 0.0
            for ring in rings:
                ts, vals = ring.last(w.length + back)
                if len(vals) < w.length + back:
                    cols = []
                    break
                cols.append(vals[: w.length])
                t_end = max(t_end, float(ts[w.length - 1]))
            if not cols:
                slot.stats.skipped += 1
                continue
            out.append((t_end, np.stack(cols, axis=1)))
        return out

    def _cut_resampled(self, slot: ModelSlot) -> list[tuple[float, npt.NDArray[np.float64]]]:
        rings = [self.points.rings[pid] for pid in slot.inputs]
        if any(len(r) == 0 for r in rings):
            return []
        newest = min(float(r.last(1)[0][0]) for r in rings)
        first = max(float(r.last(r.capacity)[0][0]) for r in rings) + slot.span
        if slot.next_end is None:
            slot.next_end = first
        elif slot.next_end < first:  # the rings no longer hold that window: skip to what they hold
            missed = int(np.ceil((first - slot.next_end) / slot.hop_s))
            slot.stats.skipped += missed
            slot.next_end += missed * slot.hop_s
        out = []
        w = slot.config.window
        lookback = slot.span + min(w.gap_limit, slot.span + slot.hop_s)
        while slot.next_end <= newest:
            t_end = slot.next_end
            slot.next_end += slot.hop_s
            cols = []
            for ring in rings:
                ts, vals = ring.since(t_end - lookback)
                col = resample(ts, vals, t_end, w)
                if col is None:
                    break
                cols.append(col)
            if len(cols) < len(rings):
                slot.stats.skipped += 1
                continue
            out.append((t_end, np.stack(cols, axis=1)))
        return out

    def _post(self, slot: ModelSlot, ends: list[float], values: npt.NDArray[np.float64]) -> None:
        n_out = len(slot.output_ids)
        ids = np.tile(slot.output_ids, len(ends))
        ts = np.repeat(np.asarray(ends, np.float64), n_out)
        vals = values.reshape(-1)
        quality = np.where(np.isfinite(vals), int(Quality.GOOD), int(Quality.BAD)).astype(np.uint8)
        batch = SampleBatch(ids, ts, vals, quality)
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._deliver, batch)
        else:
            self._deliver(batch)

    # -- worker side ---------------------------------------------------------------------------
    def _take(self) -> list[tuple[ModelSlot, list[tuple[float, npt.NDArray[np.float64]]]]]:
        work = []
        for slot in self.slots.values():
            if slot.queue:
                n = min(len(slot.queue), slot.config.batch)
                work.append((slot, [slot.queue.popleft() for _ in range(n)]))
        return work

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not any(s.queue for s in self.slots.values()):
                    self._cv.wait()
                if self._stop:
                    return
                work = self._take()
            for slot, items in work:
                self._run(slot, items)

    def run_pending(self) -> int:
        """Run every queued window in the calling thread (tests, ``gateway models test``)."""
        done = 0
        while True:
            with self._cv:
                work = self._take()
            if not work:
                return done
            for slot, items in work:
                self._run(slot, items)
                done += len(items)

    def _run(self, slot: ModelSlot, items: list[tuple[float, npt.NDArray[np.float64]]]) -> None:
        ends = [t for t, _ in items]
        with slot.lock:
            model = slot.model
            if model is None:
                return
            t0 = time.perf_counter()
            try:
                values = model.infer(np.stack([w for _, w in items]))
            except Exception as exc:  # noqa: BLE001 - a failing model must not kill the worker
                slot.stats.errors += 1
                _log.error("model %s failed on %d windows: %s", slot.config.name, len(items), exc)
                return
            slot.stats.observe(time.perf_counter() - t0)
            slot.stats.invocations += 1
            slot.stats.inferred += len(items)
        self._post(slot, ends, values)

    # -- hot swap ------------------------------------------------------------------------------
    def swap(self, name: str, file: str, sha256: str, reference: str | None = None) -> str:
        """Load ``file``, verify ``sha256``, self-test, then replace the running model atomically.

        On any failure the old model keeps running and :class:`ModelError` is raised (and
        reported through ``on_problem``). Blocking: call it from a thread or executor.
        """
        slot = self.slots.get(name)
        if slot is None:
            raise ModelError(f"no model named {name!r}; configured: {', '.join(self.slots)}")
        try:
            new = LoadedModel.load(slot.config, file, sha256)
            summary = new.self_test(reference)
        except ModelError as exc:
            message = f"swap to {file} rejected, {'old model kept' if slot.model else 'still disabled'}: {exc}"
            _log.error("model %s: %s", name, message)
            self._on_problem(name, message)
            raise ModelError(message) from None
        with slot.lock:
            slot.model, slot.state, slot.reason = new, "running", ""
            slot.stats.swaps += 1
        if (
            self._thread is None
            and self._loop is not None
            and any(s.running for s in self.slots.values())
        ):
            self._thread = threading.Thread(target=self._work, name="gateway-infer", daemon=True)
            self._thread.start()
        _log.info("model %s swapped to %s (sha256 %s): %s", name, file, sha256[:12], summary)
        return summary

    # -- operability ---------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, slot in self.slots.items():
            st = slot.stats
            p50, p99 = st.percentiles()
            out[name] = {
                "state": slot.state,
                "reason": slot.reason,
                "file": slot.model.file if slot.model else slot.config.file,
                "sha256": slot.model.sha256 if slot.model else slot.config.sha256,
                "windows": st.windows,
                "invocations": st.invocations,
                "inferred": st.inferred,
                "dropped": st.dropped,
                "skipped": st.skipped,
                "errors": st.errors,
                "swaps": st.swaps,
                "queued": len(slot.queue),
                "latency_p50_s": p50,
                "latency_p99_s": p99,
            }
        return out
