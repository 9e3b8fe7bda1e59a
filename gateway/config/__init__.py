"""Gateway configuration: one YAML file -> validated, typed objects. Import from here.

Modules of the package (callers need only this entry point):

- :mod:`~gateway.config.model` the dataclasses every stage codes against;
  :mod:`~gateway.config.models` those of the ``models:`` section and its tables;
- :mod:`~gateway.config.loader` ``load_config``: the main file, rule files, every issue at once,
  with :mod:`~gateway.config.devices` and :mod:`~gateway.config.rules` for the cross checks;
- :mod:`~gateway.config.options` / :mod:`~gateway.config.schema` the option tables (one source of
  truth for validation, the JSON Schema and docs/config.md, written by :mod:`~gateway.config.docs`);
- :mod:`~gateway.config.reader` YAML nodes read against a table, with file:line:column;
  :mod:`~gateway.config.input` bounded reading of files (size, depth, node count);
- :mod:`~gateway.config.errors` ``ConfigError`` / ``ConfigIssue``;
  :mod:`~gateway.config.check` ``gateway check``; :mod:`~gateway.config.deps` the libraries a
  config needs installed (``gateway run`` refuses to start without them).
"""

from __future__ import annotations

from gateway.config.check import CheckResult, check_config, check_main
from gateway.config.deps import Missing, missing_dependencies
from gateway.config.errors import ConfigError, ConfigIssue, format_issues
from gateway.config.input import InputError, read_bounded, read_text
from gateway.config.loader import (
    LoadReport,
    load_config,
    load_config_text,
    load_report,
    load_rule_file,
)
from gateway.config.model import (
    Action,
    AlarmAction,
    CanConfig,
    DeviceConfig,
    EventAction,
    GatewayConfig,
    LogAction,
    NodeConfig,
    Order,
    PointConfig,
    RegisterTable,
    RegisterType,
    RtuConfig,
    RuleConfig,
    SetAction,
    UplinkConfig,
    VirtualPointConfig,
    WriteAction,
)
from gateway.config.models import FeatureConfig, ModelConfig, OutputConfig, WindowConfig
from gateway.config.opcua import OpcuaConfig, OpcuaGroupConfig

__all__ = [
    "Action", "AlarmAction", "CanConfig", "CheckResult", "LoadReport", "Missing", "ConfigError", "ConfigIssue", "DeviceConfig",
    "EventAction", "FeatureConfig", "GatewayConfig", "InputError", "LogAction", "ModelConfig",
    "NodeConfig", "OpcuaConfig", "OpcuaGroupConfig", "Order", "OutputConfig", "PointConfig", "RegisterTable", "RegisterType",
    "RtuConfig", "RuleConfig", "SetAction", "UplinkConfig", "VirtualPointConfig", "WindowConfig",
    "WriteAction", "check_config", "check_main", "load_report", "missing_dependencies", "format_issues", "load_config", "load_config_text",
    "load_rule_file", "read_bounded", "read_text",
]  # fmt: skip
