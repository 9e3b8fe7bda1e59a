"""One loaded model: verified file, interpreter, quantisation, shape checks, self-test.

A :class:`LoadedModel` is immutable once built; a hot swap builds a new one beside the old and
replaces the reference (see :class:`gateway.infer.runner.ModelRunner`). Every way a model file can
be wrong (unreadable, wrong hash, not a TFLite flatbuffer, tensors that do not fit the configured
features and outputs, reference outputs not reproduced) raises :class:`ModelError` with a message
that names the model, the file and what to change.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.bounded import clip
from gateway.config import ModelConfig
from gateway.config.input import InputError, read_bounded
from gateway.infer.backend import make_interpreter
from gateway.infer.features import check_features, extract, feature_length

_QUANTIZED = (np.int8, np.uint8, np.int16)

#: Largest model file read from disk (a guard against a wrong path; the cloud's limit is
#: ``gateway.max_model_bytes``) and largest reference file.
MAX_MODEL_FILE_BYTES = 256 << 20
MAX_REFERENCE_BYTES = 32 << 20
#: Deepest JSON nesting of a reference file (it needs 4).
MAX_REFERENCE_DEPTH = 16


class ModelError(ValueError):
    """A model that cannot be used as configured; the message says why and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor: index, shape, dtype and affine quantisation (scale 0: none)."""

    index: int
    shape: tuple[int, ...]
    dtype: Any
    scale: float
    zero_point: int

    @property
    def per_window(self) -> int:
        """Values per window: everything but the batch dimension."""
        return int(math.prod(self.shape[1:])) if len(self.shape) > 1 else 1

    @property
    def quantized(self) -> bool:
        return self.dtype in _QUANTIZED

    @classmethod
    def of(cls, detail: dict[str, Any]) -> TensorInfo:
        scale, zp = detail.get("quantization", (0.0, 0))
        return cls(int(detail["index"]), tuple(int(d) for d in detail["shape"]),
                   np.dtype(detail["dtype"]).type, float(scale), int(zp))  # fmt: skip


_LIMITS = {t: (float(np.iinfo(t).min), float(np.iinfo(t).max)) for t in _QUANTIZED}


def quantize(x: npt.NDArray[np.floating[Any]], t: TensorInfo) -> npt.NDArray[Any]:
    """Real values -> the tensor's integer type: ``round(x / scale) + zero_point``, clipped."""
    lo, hi = _LIMITS[t.dtype]
    q = np.rint(np.asarray(x, np.float64) * (1.0 / t.scale))
    q += t.zero_point
    return np.clip(q, lo, hi, out=q).astype(t.dtype)


def dequantize(q: npt.NDArray[Any], t: TensorInfo) -> npt.NDArray[np.float64]:
    """The tensor's integers -> real values: ``(q - zero_point) * scale``."""
    return (q.astype(np.float64) - t.zero_point) * t.scale


class LoadedModel:
    """A model ready to run: :meth:`run` takes feature vectors, :meth:`outputs` maps results."""

    def __init__(self, config: ModelConfig, content: bytes, sha256: str, file: str) -> None:
        self.config = config
        self.sha256 = sha256
        self.file = file
        where = f"model {config.name} ({file})"
        problem = check_features(config.features, config.window.length)
        if problem:
            raise ModelError(f"{where}: {problem}")
        try:
            self.interpreter, self.delegate = make_interpreter(
                content, config.threads, config.delegate
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"{where}: not a loadable TFLite model ({_first_line(exc)}); check the file "
                "was copied whole and was converted for TFLite"
            ) from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{where}: has {len(inputs)} input tensors; models take exactly one")
        self.input = TensorInfo.of(inputs[0])
        self.output_infos = [TensorInfo.of(d) for d in self.interpreter.get_output_details()]
        for t in (self.input, *self.output_infos):
            if t.dtype not in (np.float32, *_QUANTIZED):
                raise ModelError(f"{where}: tensor {t.index} has type {np.dtype(t.dtype).name}; "
                                 "supported: float32, int8, uint8, int16")  # fmt: skip
            if t.quantized and t.scale == 0.0:
                raise ModelError(f"{where}: integer tensor {t.index} has no quantisation scale")
        want = feature_length(config.features, config.window.length, len(config.inputs))
        if self.input.per_window != want:
            f = config.features
            made = {"raw": f"{config.window.length} samples", "stats": f"{len(f.stats)} statistics",
                    "fft": f"{f.bands} bands"}[f.kind]  # fmt: skip
            raise ModelError(
                f"{where}: input tensor shape {list(self.input.shape)} holds "
                f"{self.input.per_window} values per window, but features '{f.kind}' make {want} "
                f"({made} x {len(config.inputs)} inputs); change window/features or the model"
            )
        for j, out in enumerate(config.outputs):
            if out.tensor >= len(self.output_infos):
                raise ModelError(f"{where}: outputs[{j}] ({out.name}) reads output tensor "
                                 f"{out.tensor}, the model has {len(self.output_infos)}")  # fmt: skip
            size = self.output_infos[out.tensor].per_window
            if out.reduce == "value" and out.element >= size:
                raise ModelError(f"{where}: outputs[{j}] ({out.name}) reads element "
                                 f"{out.element} of output tensor {out.tensor}, which has {size} "
                                 "values per window")  # fmt: skip
        self._batch = self.input.shape[0] if self.input.shape else 1
        self.batchable = True
        self._scale = np.array([o.scale for o in config.outputs])
        self._offset = np.array([o.offset for o in config.outputs])
        self._affine = bool((self._scale != 1.0).any() or (self._offset != 0.0).any())

    @classmethod
    def load(
        cls, config: ModelConfig, file: str | None = None, sha256: str | None = None
    ) -> LoadedModel:
        """Read, verify (sha256), build and check a model; ``file``/``sha256`` override config."""
        path = file or config.file
        expected = sha256 or config.sha256
        content = _read(config.name, path, MAX_MODEL_FILE_BYTES, "model file")
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            raise ModelError(
                f"model {config.name} ({path}): sha256 is {actual}, the config expects "
                f"{expected}; the file is corrupt or not the one configured (update sha256 only "
                "if the new file is intended)"
            )
        return cls(config, content, actual, path)

    # -- inference ---------------------------------------------------------------------------
    def run(self, feats: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float64]]:
        """Invoke on feature vectors ``[B, F]``; one ``[B, per_window]`` float array per output.

        Windows go through in one invoke when the model accepts a resized batch dimension,
        else one by one.
        """
        b = feats.shape[0]
        if not self.batchable and b > 1:
            parts = [self.run(feats[i : i + 1]) for i in range(b)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_infos))]
        interp = self.interpreter
        if b != self._batch:
            try:
                interp.resize_tensor_input(self.input.index, [b, *self.input.shape[1:]])
                interp.allocate_tensors()
                self._batch = b
            except (ValueError, RuntimeError):
                self.batchable = False
                interp.resize_tensor_input(self.input.index, list(self.input.shape))
                interp.allocate_tensors()
                self._batch = self.input.shape[0]
                return self.run(feats)
        x = feats.reshape(b, *self.input.shape[1:])
        x = quantize(x, self.input) if self.input.quantized else x.astype(np.float32, copy=False)
        interp.set_tensor(self.input.index, x)
        interp.invoke()
        return [
            dequantize(interp.get_tensor(t.index).reshape(b, -1), t)
            if t.quantized
            else interp.get_tensor(t.index).reshape(b, -1).astype(np.float64)
            for t in self.output_infos
        ]

    def outputs(self, results: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        """``[B, n_outputs]`` values of the configured output points (reduce, scale, offset)."""
        b = results[0].shape[0] if results else 0
        out = np.empty((b, len(self.config.outputs)), np.float64)
        for j, o in enumerate(self.config.outputs):
            y = results[o.tensor]
            if o.reduce == "argmax":
                out[:, j] = np.argmax(y, axis=1)
            elif o.reduce == "max":
                out[:, j] = np.max(y, axis=1)
            else:
                out[:, j] = y[:, o.element]
        if self._affine:
            out *= self._scale
            out += self._offset
        return out

    def infer(self, windows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Windows ``[B, length, channels]`` -> output point values ``[B, n_outputs]``."""
        return self.outputs(self.run(extract(windows, self.config.features)))

    # -- self-test ---------------------------------------------------------------------------
    def self_test(self, reference: str | None = None) -> str:
        """Run the reference windows and compare with the reference outputs.

        Returns a one-line summary; raises :class:`ModelError` on a mismatch, which means the
        runtime computes something else than where the model was made (wrong runtime version,
        unsupported CPU, or a file that does not match its reference).
        """
        path = reference or self.config.reference
        if path is None:
            return "no reference configured"
        ref = load_reference(path, self.config.name)
        results = self.run(extract(ref.windows, self.config.features))
        if len(ref.outputs) != len(results):
            raise ModelError(f"model {self.config.name}: reference {path} has "
                             f"{len(ref.outputs)} outputs, the model {len(results)}")  # fmt: skip
        worst = 0.0
        for k, (want, got) in enumerate(zip(ref.outputs, results, strict=True)):
            if want.shape != got.shape:
                raise ModelError(f"model {self.config.name}: self-test output {k} has shape "
                                 f"{list(got.shape)}, reference {path} has "
                                 f"{list(want.shape)}")  # fmt: skip
            err = np.abs(got - want)
            bad = np.flatnonzero(~(err <= ref.atol).all(axis=1))
            if len(bad):
                i = int(bad[0])
                raise ModelError(
                    f"model {self.config.name}: self-test failed: output {k} of reference window "
                    f"{i} differs by {float(np.nanmax(err[i])):.3g} (tolerance {ref.atol:g}); this "
                    f"runtime does not reproduce {path}, so the model is not trusted here"
                )
            worst = max(worst, float(err.max(initial=0.0)))
        return f"self-test passed: {len(ref.windows)} windows, max error {worst:.2g}"


@dataclass(frozen=True)
class Reference:
    """Reference windows ``[N, length, channels]`` and the expected output tensors."""

    windows: npt.NDArray[np.float64]
    outputs: list[npt.NDArray[np.float64]]  # one [N, per_window] per output tensor
    atol: float
    meta: dict[str, Any]


def load_reference(path: str, model: str = "") -> Reference:
    """Read a reference file: a regular file of at most :data:`MAX_REFERENCE_BYTES`, JSON
    nested at most :data:`MAX_REFERENCE_DEPTH` deep (checked before parsing)."""
    try:
        text = _read(model, path, MAX_REFERENCE_BYTES, "reference file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"model {model}: reference {path} is not UTF-8 JSON ({exc})") from None
    depth = json_depth(text)
    if depth > MAX_REFERENCE_DEPTH:
        raise ModelError(f"model {model}: reference {path} is nested {depth} levels deep; at "
                         f"most {MAX_REFERENCE_DEPTH} (windows and outputs need 4)")  # fmt: skip
    try:
        data = json.loads(text)
        windows = np.asarray(data["windows"], np.float64)
        if windows.ndim == 2:
            windows = windows[:, :, None]
        outputs = [np.asarray(o, np.float64).reshape(len(windows), -1) for o in data["outputs"]]
        atol = float(data["atol"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelError(f"model {model}: reference {path} unusable: {clip(str(exc))}") from None
    meta = {k: v for k, v in data.items() if k not in ("windows", "outputs")}
    return Reference(windows, outputs, atol, meta)


def _read(model: str, path: str, limit: int, what: str) -> bytes:
    try:
        return read_bounded(path, limit, what)
    except FileNotFoundError:
        raise ModelError(f"model {model}: {what} {path} not found") from None
    except InputError as exc:
        raise ModelError(f"model {model}: {exc}") from None


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
