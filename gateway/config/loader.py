"""Loading a config: the main file, its rule files and models, every issue of all of them.

The tables in :mod:`gateway.config.schema` check each mapping on its own; the loader adds what a
table cannot express (uniqueness, cross references, defaults that depend on other keys: devices in
:mod:`gateway.config.devices`, rules in :mod:`gateway.config.rules`) and builds the dataclasses
once the whole file, rule files included, is free of issues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from gateway.config.assets import AssetReading, with_units
from gateway.config.devices import DeviceReading
from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.input import InputError, read_text
from gateway.config.model import DeviceConfig, GatewayConfig, RuleConfig, UplinkConfig
from gateway.config.models import ModelConfig, declared_outputs, read_models
from gateway.config.opcua import resolve_certificate_dirs
from gateway.config.reader import Parsed, Reader
from gateway.config.rules import RuleReading, apply_params
from gateway.config.schema import TABLES
from gateway.model.assets import AssetsConfig, point_paths


def load_config(path: str | Path, warnings: list[ConfigIssue] | None = None) -> GatewayConfig:
    """Load and validate a config file.

    Relative paths inside it (``data_dir``, ``uplink.queue``, key files, ``rule_files``) are
    resolved against the directory of the file, never the working directory, so a config means
    the same thing wherever the gateway is started; the dataclasses hold absolute paths.

    Raises
    ------
    ConfigError
        With every issue found (file:line:column, key path, message); ``unreadable`` is set
        when the file is missing or is not YAML.

    ``warnings``, when given, receives what ``gateway check`` would warn about (overlapping
    registers, durations without a unit): valid, but probably not what was meant.
    """
    text, loader = _open(path, "config file")
    config = loader.load(text, str(Path(path).resolve()))
    if warnings is not None:
        warnings.extend(loader.warnings)
    return config


@dataclass
class LoadReport:
    """Everything one load found, for ``gateway check``: the config when it is valid, and what
    could still be checked when it is not.

    ``rules`` are the rules read without an issue (their expressions can be compiled even when
    another part of the file is wrong); ``points`` maps every point name declared by a device,
    a virtual point or a model output to whether it is writable (None: unknown, its
    ``writable`` was itself wrong); ``devices`` and ``models`` are those read without an issue
    (models carry their own ``source``), ``marks`` gives each device's ``driver`` as
    ``(line, column, key path)``.
    """

    file: str
    config: GatewayConfig | None
    issues: list[ConfigIssue]
    warnings: list[ConfigIssue]
    unreadable: bool = False
    rules: list[RuleConfig] = field(default_factory=list)
    points: dict[str, bool | None] = field(default_factory=dict)
    virtual: set[str] = field(default_factory=set)
    devices: list[DeviceConfig] = field(default_factory=list)
    models: list[ModelConfig] = field(default_factory=list)
    marks: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # asset path name -> point name


def load_report(path: str | Path) -> LoadReport:
    """Load ``path`` like :func:`load_config`, but return what was found instead of raising."""
    try:
        text, loader = _open(path, "config file")
    except ConfigError as err:
        return LoadReport(str(path), None, err.issues, [], unreadable=True)
    config: GatewayConfig | None = None
    unreadable = False
    try:
        config = loader.load(text, str(Path(path).resolve()))
    except ConfigError as err:
        unreadable = err.unreadable
    points = dict(loader.points or {})
    points.update({name: False for name in loader.virtual})
    points.update({name: False for name in loader.model_outputs})
    return LoadReport(
        str(path), config, loader.issues, loader.warnings, unreadable, loader.clean_rules,
        points, set(loader.virtual), loader.clean_devices, loader.clean_models, loader.marks,
        point_paths(loader.assets),
    )  # fmt: skip


def _open(path: str | Path, what: str) -> tuple[str, Loader]:
    """The text of a config or rule file and a loader for it; ConfigError if unreadable."""
    file = Path(path)
    try:
        text = read_text(file, what=what)
    except FileNotFoundError:
        issue = ConfigIssue(str(path), 0, 0, "", "file not found")
        raise ConfigError([issue], unreadable=True) from None
    except InputError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", str(exc))], unreadable=True) from None
    loader = Loader(str(path), file.resolve().parent)
    loader.read_bytes += len(text)
    return text, loader


def load_config_text(
    text: str, filename: str = "<string>", *, base_dir: str | Path | None = None
) -> GatewayConfig:
    """Validate config text; ``filename`` is used in messages and as ``GatewayConfig.source``.

    Relative paths resolve against ``base_dir``, by default the directory of ``filename``.
    """
    base = Path(base_dir) if base_dir is not None else Path(filename).parent
    return Loader(filename, base.resolve()).load(text, filename)


def load_rule_file(
    path: str | Path, params: dict[str, Any] | None = None
) -> tuple[RuleConfig, ...]:
    """Load a standalone rule file or pack (``gateway rules test``): rules only.

    Write and set targets are not checked against devices here; the replay builds its point
    table from the data and the rules. Raises :class:`ConfigError`.
    """
    text, loader = _open(path, "rule file")
    loader.points = None  # no device points: skip target checks
    reader = Reader(str(path), loader.base_dir, loader.issues, loader.warnings)
    entry = MappingNode("tag:yaml.org,2002:map", [])
    given = {k: (v, ScalarNode("tag:yaml.org,2002:str", k)) for k, v in (params or {}).items()}
    substituted = apply_params(reader, text, given, reader, entry, "--param")
    rules = [] if substituted is None else loader._rule_file(reader, substituted)
    if loader.issues or None in rules:
        if not loader.issues:
            loader.issues.append(ConfigIssue(str(path), 0, 0, "", "invalid rule file"))
        raise ConfigError(loader.issues)
    return tuple(r for r in rules if r is not None)


class Loader(DeviceReading, RuleReading, AssetReading):
    """One load: the main file, its rule files and the issues of all of them."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self.main = Reader(file, base_dir, self.issues, self.warnings)
        self.files = [file]
        # full point name -> writable (None when its `writable` value was itself wrong);
        # None for a standalone rule file (no devices to check targets against)
        self.points: dict[str, bool | None] | None = {}
        self.virtual: set[str] = set()  # declared "virtual.<name>" points
        self.rule_file_paths: list[str] = []
        self.rule_names: dict[str, str] = {}  # name -> "file:line" of its first definition
        self.read_bytes = 0  # of every file of this load, against input.MAX_TOTAL_BYTES
        # for `gateway check`: what was read without an issue, and where
        self.clean_rules: list[RuleConfig] = []
        self.clean_devices: list[DeviceConfig] = []
        self.clean_models: list[ModelConfig] = []
        self.model_outputs: set[str] = set()
        self.marks: dict[str, tuple[int, int, str]] = {}
        self.point_nodes: dict[str, tuple[Node, str]] = {}
        self.point_units: dict[str, str] = {}
        self.assets: AssetsConfig | None = None  # read before the rules (asset-path names)

    def load(self, text: str, source: str) -> GatewayConfig:
        root = self.main.compose(text)
        if root is None:
            syntax_error = bool(self.issues)
            if not syntax_error:
                self.main.error(None, "", "empty config; expected a mapping with a 'gateway' key")
            raise ConfigError(self.issues, unreadable=syntax_error)
        config = self._root(root, source)
        order = {file: i for i, file in enumerate(self.files)}
        self.warnings.sort(key=lambda issue: (order[issue.file], issue.line, issue.column))
        if self.issues or config is None:
            self.issues.sort(key=lambda issue: (order[issue.file], issue.line, issue.column))
            raise ConfigError(self.issues)
        return config

    def _root(self, root: Node, source: str) -> GatewayConfig | None:
        top = self.main.section(root, "", TABLES["root"])
        if top is None:
            return None
        gateway = None
        if "gateway" in top.nodes and top.ok("gateway"):
            gateway = self.main.section(top.nodes["gateway"], "gateway", TABLES["gateway"])
        devices = self._devices(top)
        if gateway is not None and gateway.ok("data_dir"):
            data_dir = gateway.values["data_dir"]
            devices = resolve_certificate_dirs(self.main, devices, data_dir, self.marks)
        self.assets = self._assets(top, devices)
        self.point_units = {
            f"{d.name}.{p.name}": p.unit
            for d in with_units(self.assets, tuple(d for d in devices if d is not None))
            for p in d.points
        }
        for alias, name in point_paths(self.assets).items():
            self.point_units[alias] = self.point_units.get(name, "")
        virtual = self._read_virtual_points(top)
        rules = [
            *self._rules(self.main, top, "rules"),
            *self._rule_files(top),
        ]
        uplink = self._uplink(top)
        devices_named = {d.name for d in devices if d is not None}
        models = read_models(self.main, top.values.get("models"), self.points or {}, devices_named)
        self.clean_devices = [d for d in devices if d is not None]
        self.clean_models = [m for m in models if m is not None]
        self.model_outputs = declared_outputs(top.values.get("models"))
        if self.issues or gateway is None or uplink is None:
            return None
        return GatewayConfig(
            **gateway.fields(),
            devices=with_units(self.assets, tuple(d for d in devices if d is not None)),
            rules=tuple(r for r in rules if r is not None),
            uplink=uplink,
            models=tuple(m for m in models if m is not None),
            source=source,
            virtual_points=virtual,
            rule_files=tuple(self.rule_file_paths),
            assets=self.assets,
        )

    # --- devices and points ------------------------------------------------------------------

    # --- uplink ------------------------------------------------------------------------------

    def _uplink(self, top: Parsed) -> UplinkConfig | None:
        if not top.ok("uplink"):
            return None
        node = top.values["uplink"]
        if not isinstance(node, Node):  # absent or null: all defaults
            mark = top.at("uplink").start_mark
            node = MappingNode("tag:yaml.org,2002:map", [], mark, mark)
        parsed = self.main.section(node, "uplink", TABLES["uplink"])
        if parsed is None:
            return None
        values = parsed.values
        if parsed.ok("insecure", "server_key") and not (values["insecure"] or values["server_key"]):
            msg = (
                "required unless insecure: true (plaintext TCP must be chosen explicitly; "
                "create keys with `gateway keys`)"
            )
            self.main.error(parsed.at("server_key"), "uplink.server_key", msg)
        if (
            parsed.ok("insecure", "server_key", "key_dir")
            and values["server_key"]
            and not (values["insecure"] or values["key_dir"])
        ):
            msg = (
                "required unless insecure: true (the directory with this gateway's "
                "<id>.key_secret; create it with `gateway keys new`)"
            )
            self.main.error(parsed.at("key_dir"), "uplink.key_dir", msg)
        return None if parsed.bad else UplinkConfig(**parsed.fields())
