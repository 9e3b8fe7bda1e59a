"""The ``models:`` section of the config: dataclasses and the cross checks a table cannot express.

The option tables (``model``, ``model_window``, ``model_features``, ``model_output``) live in
:mod:`gateway.config_schema` with every other table; this module only turns parsed sections into
:class:`ModelConfig` and checks names and references (unique names, no clash with a device, inputs
that exist, a model file that exists). Nothing here imports the interpreter.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from yaml.nodes import Node

from gateway.config_schema import TABLES
from gateway.config_yaml import Parsed, Reader, join, suggest

STATS = ("mean", "std", "rms", "min", "max", "p2p", "crest", "kurtosis", "skew")


@dataclass(frozen=True)
class WindowConfig:
    length: int
    hop: int
    rate: float | None = None  # Hz; None: newest `length` samples as they are
    max_gap: float | None = None  # seconds; None: 10 periods
    capacity: int | None = None

    @property
    def gap_limit(self) -> float:
        """Longest tolerated gap between samples in a resampled window, in seconds."""
        if self.max_gap is not None:
            return self.max_gap
        return 10.0 / self.rate if self.rate else float("inf")


@dataclass(frozen=True)
class FeatureConfig:
    kind: Literal["raw", "stats", "fft"] = "raw"
    stats: tuple[str, ...] = ("mean", "std", "rms", "p2p", "crest", "kurtosis")
    bands: int = 8
    log: bool = False
    center: bool = False
    offset: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class OutputConfig:
    name: str
    tensor: int = 0
    element: int = 0
    reduce: Literal["value", "argmax", "max"] = "value"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """One model of the registry. Its outputs are the points ``<name>.<output.name>``."""

    name: str
    file: str
    sha256: str
    inputs: tuple[str, ...]
    window: WindowConfig
    outputs: tuple[OutputConfig, ...]
    features: FeatureConfig = FeatureConfig()
    reference: str | None = None
    threads: int = 1
    delegate: Literal["none", "edgetpu"] = "none"
    queue: int = 64
    batch: int = 8
    enabled: bool = True
    source: str = ""  # "file:line" of the entry, for messages

    def output_points(self) -> list[str]:
        return [f"{self.name}.{o.name}" for o in self.outputs]


def _scalars(parsed: Parsed, table: str) -> dict[str, object]:
    structural = ("section", "section_list", "actions")
    return {
        o.field: parsed.values[o.key] for o in TABLES[table].options if o.kind not in structural
    }


def read_models(
    reader: Reader, node: object, known_points: Mapping[str, object], devices: set[str]
) -> list[ModelConfig | None]:
    """Read the ``models:`` list; issues go to ``reader``. ``None`` marks an entry with issues.

    A model's inputs may be device points or outputs of models listed before it (no cycles).
    """
    if not isinstance(node, Node):
        return []
    points = set(known_points)
    names: dict[str, int] = {}
    models: list[ModelConfig | None] = []
    for i, item in enumerate(node.value):
        path = join("models", i)
        parsed = reader.section(item, path, TABLES["model"])
        if parsed is None:
            models.append(None)
            continue
        model = _model(reader, parsed, path, points, devices, names)
        models.append(model)
        if parsed.ok("name", "outputs"):
            for out in _output_names(parsed):
                points.add(f"{parsed.values['name']}.{out}")
    return models


def _output_names(parsed: Parsed) -> list[str]:
    node = parsed.values.get("outputs")
    names = []
    for item in node.value if isinstance(node, Node) else ():
        for key, value in getattr(item, "value", ()):
            if getattr(key, "value", None) == "name" and isinstance(value.value, str):
                names.append(value.value)
    return names


def _model(
    reader: Reader, parsed: Parsed, path: str, points: set[str], devices: set[str],
    names: dict[str, int],
) -> ModelConfig | None:  # fmt: skip
    values, error = parsed.values, reader.error
    line = parsed.node.start_mark.line + 1
    if parsed.ok("name"):
        name = values["name"]
        if name in names:
            error(parsed.at("name"), join(path, "name"),
                  f"duplicate model name '{name}' (first at line {names[name]})")  # fmt: skip
        elif name in devices:
            error(parsed.at("name"), join(path, "name"),
                  f"'{name}' is a device name; model outputs are points '<model>.<output>', so "
                  "model and device names must differ")  # fmt: skip
        else:
            names[name] = line
    if parsed.ok("file") and (problem := _file_problem(values["file"], "model file")):
        error(parsed.at("file"), join(path, "file"), problem)
    ref = values.get("reference")
    if parsed.ok("reference") and ref is not None and (problem := _file_problem(ref, "reference")):
        error(parsed.at("reference"), join(path, "reference"), problem)
    if parsed.ok("inputs"):
        for j, point in enumerate(values["inputs"]):
            if point not in points:
                node = parsed.nodes["inputs"].value[j]
                error(node, join(path, "inputs", j),
                      f"unknown point '{point}'{suggest(point, points)}; inputs are device points "
                      "or outputs of models listed earlier")  # fmt: skip
    window = _sub(reader, parsed, path, "window", "model_window")
    features = _sub(reader, parsed, path, "features", "model_features")
    if (
        window is not None
        and window.ok("length", "hop")
        and window.values["hop"] > window.values["length"]
    ):
        error(window.at("hop"), join(path, "window", "hop"),
              f"must be <= length ({window.values['length']}); gaps between windows lose data")  # fmt: skip
    if features is not None and features.ok("stats"):
        for j, stat in enumerate(features.values["stats"]):
            if stat not in STATS:
                error(features.nodes["stats"].value[j], join(path, "features", "stats", j),
                      f"unknown statistic '{stat}'{suggest(stat, STATS)}; valid: "
                      + ", ".join(STATS))  # fmt: skip
    outputs: list[OutputConfig | None] = []
    seen: set[str] = set()
    node = values.get("outputs")
    for j, item in enumerate(node.value if isinstance(node, Node) else ()):
        opath = join(path, "outputs", j)
        out = reader.section(item, opath, TABLES["model_output"])
        if out is None or out.bad:
            outputs.append(None)
            continue
        if out.values["name"] in seen:
            error(out.at("name"), join(opath, "name"), f"duplicate output '{out.values['name']}'")
            outputs.append(None)
            continue
        seen.add(out.values["name"])
        outputs.append(OutputConfig(**_scalars(out, "model_output")))  # type: ignore[arg-type]
    if (
        parsed.bad
        or window is None
        or window.bad
        or (features is not None and features.bad)
        or None in outputs
        or len(reader.issues)
        and _has_issue_under(reader, path)
    ):
        return None
    return ModelConfig(
        **_scalars(parsed, "model"),  # type: ignore[arg-type]
        window=WindowConfig(**_scalars(window, "model_window")),  # type: ignore[arg-type]
        features=(
            FeatureConfig(**_scalars(features, "model_features"))  # type: ignore[arg-type]
            if features is not None
            else FeatureConfig()
        ),
        outputs=tuple(o for o in outputs if o is not None),
        source=f"{reader.file}:{line}",
    )


def _file_problem(path: str, what: str) -> str | None:
    """Why ``path`` cannot be a model or reference file (missing, not a regular file), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{what} not found: {path}"
    except OSError as exc:
        return f"cannot read {what} {path}: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{what} {path} is not a regular file; only regular files are read"
    return None


def _has_issue_under(reader: Reader, path: str) -> bool:
    return any(i.file == reader.file and i.path.startswith(path + ".") for i in reader.issues)


def _sub(reader: Reader, parsed: Parsed, path: str, key: str, table: str) -> Parsed | None:
    node = parsed.values.get(key)
    if not isinstance(node, Node):
        return None
    return reader.section(node, join(path, key), TABLES[table])
