"""The ``models:`` section of the config: dataclasses and the cross checks a table cannot express.

The option tables (``model``, ``model_window``, ``model_features``, ``model_output``) are here too
(:mod:`gateway.config.schema` lists them with every other table); this module turns parsed
sections into :class:`ModelConfig` and checks names and references (unique names, no clash with a device, inputs
that exist, a model file that exists). Nothing here imports the interpreter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from yaml.nodes import Node

from gateway.config.input import file_problem
from gateway.config.options import Option, Section
from gateway.config.reader import Parsed, Reader, join, suggest

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


_MODEL = Section(
    "model",
    "models[]",
    "models[]",
    "A TFLite model run on windows of points in a worker thread. Each output becomes the point "
    "`<name>.<output>` with the window's end timestamp, seen by rules, the uplink and other "
    "models.",
    (
        Option("name", "string", "Model name; the first half of its output points. Unique, and "
               "not the name of a device.", format="identifier"),
        Option("file", "path", "The .tflite file (relative: to the config file)."),
        Option("sha256", "string", "SHA-256 of the file, verified at every load; a mismatch "
               "disables the model and raises an alarm.", format="sha256"),
        Option("reference", "path", "JSON file with reference windows and the outputs expected "
               "for them; the start-up and hot-swap self-test runs it. null: no self-test.",
               None, nullable=True),
        Option("inputs", "string_list", "Points whose windows feed the model, one channel each.",
               min_items=1, format="point_ref"),
        Option("window", "section", "How windows are cut from the inputs' ring buffers.",
               table="model_window"),
        Option("features", "section", "Feature extraction between window and model.", {},
               nullable=True, table="model_features", default_doc="raw window"),
        Option("outputs", "section_list", "Output points of the model.", min_items=1,
               table="model_output"),
        Option("threads", "integer", "Interpreter threads (1 is fastest for small models).", 1,
               minimum=1, maximum=16),
        Option("delegate", "choice", "`edgetpu` loads libedgetpu.so.1 and falls back to the CPU "
               "with a warning when it cannot.", "none", choices=("none", "edgetpu")),
        Option("queue", "integer", "Windows waiting for the worker; when full the oldest is "
               "dropped and counted.", 64, minimum=1, maximum=100_000),
        Option("batch", "integer", "Most windows run in one invoke when several are ready.", 8,
               minimum=1, maximum=1024),
        Option("enabled", "boolean", "Disabled models keep their output points but never run.",
               True),
    ),
)  # fmt: skip

_MODEL_WINDOW = Section(
    "model_window",
    "models[].window",
    "models[].window",
    "A window is `length` samples per input; a new one starts every `hop` samples.",
    (
        Option("length", "integer", "Samples per window and input.", minimum=1,
               maximum=1_000_000),
        Option("hop", "integer", "Samples between window starts (`length / 2` is 50 % overlap).",
               minimum=1, maximum=1_000_000),
        Option("rate", "number", "Resample the inputs to this rate (Hz) by linear interpolation, "
               "for irregular samples (polling); null: use the newest `length` samples as they "
               "are (a regularly sampled stream).", None, minimum=0, exclusive_minimum=True,
               nullable=True),
        Option("max_gap", "duration", "With `rate`: a gap between samples longer than this "
               "skips the window (counted); null: 10 sample periods.", None, minimum=0,
               exclusive_minimum=True, nullable=True),
        Option("capacity", "integer", "Ring buffer size requested for the input points; null: "
               "the larger of `gateway.ring_capacity` and twice the samples a window spans.",
               None, minimum=2, maximum=10_000_000, nullable=True),
    ),
)  # fmt: skip

_MODEL_FEATURES = Section(
    "model_features",
    "models[].features",
    "models[].features",
    "Computed per input channel in the worker; the feature vector must fill the model's input "
    "tensor (its shape is checked at load).",
    (
        Option("kind", "choice", "`raw`: the window itself; `stats`: window statistics; `fft`: "
               "energies of equal-width frequency bands from 0 to Nyquist (DC excluded).", "raw",
               choices=("raw", "stats", "fft")),
        Option("stats", "string_list", "Statistics for `kind: stats`, from mean, std, rms, min, "
               "max, p2p, crest, kurtosis, skew.",
               ("mean", "std", "rms", "p2p", "crest", "kurtosis"), min_items=1),
        Option("bands", "integer", "Frequency bands for `kind: fft`.", 8, minimum=1,
               maximum=4096),
        Option("log", "boolean", "`fft`: log10 of the band energies (energy + 1e-12).", False),
        Option("center", "boolean", "`raw`: subtract the window mean first (`fft` always "
               "leaves out DC).", False),
        Option("offset", "number", "Subtracted from every feature ...", 0.0),
        Option("scale", "number", "... then every feature is multiplied by this.", 1.0,
               nonzero=True),
    ),
)  # fmt: skip

_MODEL_OUTPUT = Section(
    "model_output",
    "models[].outputs[]",
    "models[].outputs[]",
    "One output point `<model>.<name>`: one element of an output tensor (dequantized for int8 "
    "models), times `scale` plus `offset`.",
    (
        Option("name", "string", "Output name.", format="identifier"),
        Option("tensor", "integer", "Index into the model's output tensors.", 0, minimum=0),
        Option("element", "integer", "Element of the tensor's per-window values (row-major).",
               0, minimum=0),
        Option("reduce", "choice", "`value`: the element; `argmax` / `max`: index or value of "
               "the largest element (classifiers).", "value", choices=("value", "argmax", "max")),
        Option("scale", "number", "Multiplier.", 1.0),
        Option("offset", "number", "Added after scaling.", 0.0),
        Option("unit", "string", "Unit of the output point.", ""),
    ),
)  # fmt: skip

#: The tables of the ``models:`` section, in document order.
MODEL_TABLES: Final[tuple[Section, ...]] = (_MODEL, _MODEL_WINDOW, _MODEL_FEATURES, _MODEL_OUTPUT)


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
        parsed = reader.section(item, path, _MODEL)
        if parsed is None:
            models.append(None)
            continue
        model = _model(reader, parsed, path, points, devices, names)
        models.append(model)
        if parsed.ok("name", "outputs"):
            for out in _output_names(parsed):
                points.add(f"{parsed.values['name']}.{out}")
    return models


def declared_outputs(node: object) -> set[str]:
    """``<model>.<output>`` of every entry of a ``models:`` node whose names can be read, wrong
    or not: what rules may refer to, so a model with an issue is not also an unknown point."""
    names: set[str] = set()
    for item in node.value if isinstance(node, Node) else ():
        keys = {getattr(k, "value", None): v for k, v in getattr(item, "value", ())}
        model = keys.get("name")
        if model is not None and isinstance(model.value, str):
            for item_out in getattr(keys.get("outputs"), "value", ()):
                for key, value in getattr(item_out, "value", ()):
                    if getattr(key, "value", None) == "name" and isinstance(value.value, str):
                        names.add(f"{model.value}.{value.value}")
    return names


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
    if parsed.ok("file") and (problem := file_problem(values["file"], "model file")):
        error(parsed.at("file"), join(path, "file"), problem)
    ref = values.get("reference")
    if parsed.ok("reference") and ref is not None and (problem := file_problem(ref, "reference")):
        error(parsed.at("reference"), join(path, "reference"), problem)
    if parsed.ok("inputs"):
        for j, point in enumerate(values["inputs"]):
            if point not in points:
                node = parsed.nodes["inputs"].value[j]
                error(node, join(path, "inputs", j),
                      f"unknown point '{point}'{suggest(point, points)}; inputs are device points "
                      "or outputs of models listed earlier")  # fmt: skip
    window = _sub(reader, parsed, path, "window", _MODEL_WINDOW)
    features = _sub(reader, parsed, path, "features", _MODEL_FEATURES)
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
        out = reader.section(item, opath, _MODEL_OUTPUT)
        if out is None or out.bad:
            outputs.append(None)
            continue
        if out.values["name"] in seen:
            error(out.at("name"), join(opath, "name"), f"duplicate output '{out.values['name']}'")
            outputs.append(None)
            continue
        seen.add(out.values["name"])
        outputs.append(OutputConfig(**out.fields()))  # type: ignore[arg-type]
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
        **parsed.fields(),  # type: ignore[arg-type]
        window=WindowConfig(**window.fields()),  # type: ignore[arg-type]
        features=(
            FeatureConfig(**features.fields())  # type: ignore[arg-type]
            if features is not None
            else FeatureConfig()
        ),
        outputs=tuple(o for o in outputs if o is not None),
        source=f"{reader.file}:{line}",
    )


def _has_issue_under(reader: Reader, path: str) -> bool:
    return any(i.file == reader.file and i.path.startswith(path + ".") for i in reader.issues)


def _sub(reader: Reader, parsed: Parsed, path: str, key: str, table: Section) -> Parsed | None:
    node = parsed.values.get(key)
    if not isinstance(node, Node):
        return None
    return reader.section(node, join(path, key), table)
