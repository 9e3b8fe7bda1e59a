"""``gateway check``: validate a config and say what is wrong with it."""

from __future__ import annotations

import sys

from gateway.config.errors import ConfigError, format_issues
from gateway.config.loader import load_config


def check_main(path: str) -> int:
    """``gateway check FILE``: print the issues or a one-line summary.

    Returns 0 if the config is valid, 1 if it has issues, 2 if the file is missing or not YAML.
    """
    try:
        config = load_config(path)
    except ConfigError as err:
        count = len(err.issues)
        print(format_issues(err), file=sys.stderr)
        print(f"{path}: {count} issue{'' if count == 1 else 's'}", file=sys.stderr)
        return 2 if err.unreadable else 1
    points = sum(len(device.points) for device in config.devices)
    print(f"{path}: OK: {len(config.devices)} devices, {points} points, {len(config.rules)} rules")
    return 0
