"""Generate the JSON Schema and the Markdown reference of the config from the option tables.

Both outputs are committed (``gateway/schema/config.schema.json``, ``docs/config.md``) and a test
fails when they differ from what this module generates. After changing a table, regenerate with::

    python -m gateway.config.docs          # write both files
    python -m gateway.config.docs --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.config.input import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_ISSUES,
    MAX_NODES,
    MAX_NUMBER_CHARS,
    MAX_TOTAL_BYTES,
)
from gateway.config.options import FORMATS, REQUIRED, Option, Section
from gateway.config.schema import SECTIONS, TABLES
from gateway.durations import ACCEPTED_FORMS, DURATION_PATTERN, format_duration

SCHEMA_PATH = Path(__file__).parents[1] / "schema" / "config.schema.json"
DOCS_PATH = Path(__file__).parents[2] / "docs" / "config.md"
_SCALAR_KINDS = ("string", "integer", "number", "boolean", "duration", "choice", "path", "value")
_TOP_ONLY = ("root", "rule_file")  # sections that are documents, not $defs
_SHORT_FORMAT = {
    "identifier": "identifier", "gateway_id": "id", "rule_name": "name", "host": "host",
    "host_port": "host:port", "tcp_endpoint": "tcp://host:port", "point_ref": "device.point",
    "sha256": "sha256",
}  # fmt: skip


# --- JSON Schema -------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema (draft 2020-12), for editors and external validators."""
    defs: dict[str, Any] = {s.name: _object(s) for s in SECTIONS if s.name not in _TOP_ONLY}
    defs["action"] = {
        "description": "One action: a mapping with exactly one key, alarm, event, write, set or log.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "alarm": {"anyOf": [{"type": "string"}, {"type": "null"}, _ref("alarm")]},
            "event": {"anyOf": [{"type": "string", "minLength": 1}, _ref("event")]},
            "write": _ref("write"),
            "set": _ref("set"),
            "log": {"anyOf": [{"type": "string", "minLength": 1}, _ref("log")]},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Edge gateway configuration",
        **_object(TABLES["root"]),
        "$defs": defs,
    }


def _ref(table: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{table}"}


def _object(section: Section) -> dict[str, Any]:
    return {
        "description": section.doc,
        "type": "object",
        "properties": {opt.key: _property(opt) for opt in section.options},
        "required": [opt.key for opt in section.options if opt.required],
        "additionalProperties": False,
    }


def _property(opt: Option) -> dict[str, Any]:
    schema = _base(opt)
    if opt.nullable and isinstance(schema.get("type"), str):
        # A type list keeps errors inside the value precise; anyOf would report one vague error.
        schema["type"] = [schema["type"], "null"]
    elif opt.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    schema = {"description": opt.doc, **schema}
    if not opt.required:
        schema["default"] = _jsonable(opt.default)
    return schema


def _base(opt: Option) -> dict[str, Any]:
    kind = opt.kind
    if kind in ("string", "path"):
        schema: dict[str, Any] = {"type": "string"}
        if opt.min_length or kind == "path":
            schema["minLength"] = max(opt.min_length, 1)
        if opt.format:
            schema["pattern"] = FORMATS[opt.format].pattern
        return schema
    if kind == "choice":
        return {"type": "string", "enum": list(opt.choices)}
    if kind in ("integer", "number"):
        return {"type": kind, **_bounds(opt), **({"not": {"const": 0}} if opt.nonzero else {})}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "duration":
        return _duration(opt)
    if kind in ("string_list", "path_list"):
        item = Option(opt.key, "path" if kind == "path_list" else "string", "", format=opt.format)
        return {"type": "array", "items": _base(item), **_min_items(opt, "minItems")}
    if kind == "duration_map":
        return {
            "type": "object",
            "propertyNames": {"pattern": FORMATS["identifier"].pattern},
            "additionalProperties": _duration(opt),
            **_min_items(opt, "minProperties"),
        }
    if kind == "range":
        return {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    if kind == "section":
        return _ref(str(opt.table))
    if kind == "section_list":
        return {"type": "array", "items": _ref(str(opt.table))}
    if kind == "actions":
        return {"type": "array", "items": _ref("action"), **_min_items(opt, "minItems")}
    if kind == "rule_file_list":
        path = {"type": "string", "minLength": 1}
        return {"type": "array", "items": {"anyOf": [path, _ref("include")]}}
    if kind == "params":
        return {
            "type": "object",
            "propertyNames": {"pattern": FORMATS["identifier"].pattern},
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        }
    return {"type": ["number", "string", "boolean"]}  # value


def _duration(opt: Option) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number", **_bounds(opt)},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
    }


def _bounds(opt: Option) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if opt.minimum is not None:
        bounds["exclusiveMinimum" if opt.exclusive_minimum else "minimum"] = opt.minimum
    if opt.maximum is not None:
        bounds["maximum"] = opt.maximum
    return bounds


def _min_items(opt: Option, keyword: str) -> dict[str, Any]:
    return {keyword: opt.min_items} if opt.min_items else {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


# --- Markdown reference ------------------------------------------------------------------------

_INTRO = """\
# Configuration reference

<!-- Generated by `python -m gateway.config.docs` from gateway/config/schema.py; do not edit. -->

A gateway is configured by one YAML file (see `examples/demo.yaml`), plus optional rule files.
Check a file without starting anything:

```
gateway check examples/demo.yaml
```

It reports every error in one pass, each as `file:line:column: key.path: message`: the keys and
values of the file and its rule files, the rule expressions and templates (compiled as the rule
engine compiles them), the libraries the configured drivers and models need (named with the
package to install; `gateway run` refuses to start without them), and the models' self-tests.
Warnings (valid, but probably not meant) follow as `file:line:column: warning: ...`. The last
line is the verdict: `FILE: OK: N devices, M points, K rules` on stdout and exit 0 (warnings
allowed), or `FILE: N errors` on stderr and exit 1; 2 when the file is missing or is not YAML.
"OK" is never printed before all checks have run. For example

```
site.yaml:14:40: devices[0].points[2].type: expected one of bool, int16, uint16, int32, uint32, \
float32, float64; got 'flaot32' (did you mean 'float32'?)
```

Editors with a YAML language server can check and complete the file with the JSON Schema in
`gateway/schema/config.schema.json`: put
`# yaml-language-server: $schema=<path to>/gateway/schema/config.schema.json` on the first line.

## Conventions

- **Unknown keys are errors**, so a typo never silently falls back to a default; the message
  names the valid keys and the closest one.
- **Durations** are converted to float seconds. Accepted forms:
  {durations}. Periods (timeouts, poll periods, delays) must be > 0. A bare number is taken
  as seconds and `gateway check` warns about it (`period: 5` -> write `5s`), since `500` meant
  as milliseconds would be eight minutes.
- **Relative paths** (`gateway.data_dir`, `uplink.queue`, `uplink.server_key`, `uplink.key_dir`,
  `devices[].node.key_file`, `rule_files`) are resolved against the directory of the config file, not the working
  directory, so a config means the same wherever the gateway starts. `~` expands to the home
  directory.
- **null** (`key:` with nothing after it) turns off options documented as nullable; for lists
  and sections it means empty / all defaults.
- Strings that YAML would read as something else must be quoted: `id: "42"`, `unit: "%"`.
- Standard YAML anchors, aliases and `<<` merge keys work; a key written twice in one mapping is
  an error.
- **Limits**, checked before a file is parsed: only regular files are read (not `/dev/zero`, a
  FIFO or a directory), each at most {max_file} bytes and all files of one config (packs after
  their parameters are substituted) at most {max_total}; nesting at most {max_depth} levels; at
  most {max_nodes} values per file, counting each use of an alias as a copy (so anchors cannot
  blow a small file up, and an anchor cannot contain itself); numbers at most {max_number}
  characters. A file over a limit is refused with its file:line:column, at start, by
  `gateway check` and on reload (the running rules stay). At most {max_issues} issues are listed.

"""

_CROSS_CHECKS = """\
## Checks across keys

Besides each key's own type and range, the loader checks:

- device names are unique; point names are unique within their device;
- a point's `poll` names a poll group of its device;
- coil and discrete points have type `bool`, and `bool` points live only in those tables;
- `address` plus the registers of the type fits the address space: the last register is
  <= 65535 (int32/uint32/float32 take 2 registers, float64 takes 4);
- points in the read-only tables `input` and `discrete` are not `writable`;
- `reconnect_max` >= `reconnect_min`;
- rule names are unique across the config file and all rule files;
- a `write` action's point exists and is `writable`;
- `uplink.server_key` is set unless `uplink.insecure: true` (plaintext must be chosen explicitly);
- a node's `key_file` is set unless its `insecure: true` (not both), and the file holds a valid
  key and is not open to other users;
- a CAN device with points has a `dbc:` file that exists.

Expressions (`when`, `clear`, `write.value`) and message templates are compiled by the rule
engine: at start, on reload and by `gateway check`, which also checks that the library of each
configured driver and model is installed (pyserial for `modbus_rtu` and `node` on a serial port,
python-can for a CAN interface other than `socketcan`, cantools for a DBC, LiteRT or
tflite-runtime for models) and warns, without failing, when two points of one Modbus device read
the same registers of one table (counting the 2 or 4 registers of 32- and 64-bit types).
"""


def markdown_reference() -> str:
    """The text of ``docs/config.md``."""
    parts = [
        _INTRO.format(
            durations=ACCEPTED_FORMS,
            max_file=MAX_FILE_BYTES,
            max_total=MAX_TOTAL_BYTES,
            max_depth=MAX_DEPTH,
            max_nodes=MAX_NODES,
            max_number=MAX_NUMBER_CHARS,
            max_issues=MAX_ISSUES,
        )  # fmt: skip
    ]
    for section in SECTIONS:
        parts.append(_markdown_section(section))
    parts.append(_CROSS_CHECKS)
    return "\n".join(parts)


def _markdown_section(section: Section) -> str:
    lines = [f"## {section.title}", "", f"Where: `{section.where}`. {section.doc}", ""]
    lines.append("| Key | Type | Default | Description |")
    lines.append("|---|---|---|---|")
    for opt in section.options:
        cells = (f"`{opt.key}`", _type_doc(opt), _default_doc(opt), opt.doc)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _type_doc(opt: Option) -> str:
    kind = opt.kind
    text: str
    if kind == "choice":
        text = "one of " + ", ".join(f"`{c}`" for c in opt.choices)
        if opt.planned:
            text += " (later: " + ", ".join(f"`{c}`" for c in opt.planned) + ")"
    elif kind in ("integer", "number", "duration"):
        text = kind + _range_doc(opt)
    elif kind == "string":
        text = f"string ({_SHORT_FORMAT[opt.format]})" if opt.format else "string"
        if opt.min_length and not opt.format:
            text = "non-empty string"
    elif kind in ("string_list", "path_list"):
        item = _SHORT_FORMAT[opt.format] if opt.format else "path"
        text = f"list of {item}" + (f", at least {opt.min_items}" if opt.min_items else "")
    elif kind == "duration_map":
        text = "mapping identifier: duration > 0"
    elif kind == "section":
        text = f"mapping (`{TABLES[str(opt.table)].where}`)"
    elif kind == "section_list":
        text = f"list of mappings (`{TABLES[str(opt.table)].where}`)"
    elif kind == "actions":
        text = "list of actions (`alarm`, `event`, `write`, `set`, `log`)"
    elif kind == "rule_file_list":
        text = "list of paths or `{include, params}` mappings"
    elif kind == "params":
        text = "mapping identifier: number, string, boolean or null"
    elif kind == "value":
        text = "number, string or boolean"
    elif kind == "range":
        text = "`[low, high]`, two numbers"
    else:
        text = kind
    return text + (" or null" if opt.nullable and kind in _SCALAR_KINDS else "")


def _range_doc(opt: Option) -> str:
    low, high = opt.minimum, opt.maximum
    if low is not None and high is not None and not opt.exclusive_minimum:
        return f" {low:g}..{high:g}"
    text = ""
    if low is not None:
        text += f" {'>' if opt.exclusive_minimum else '>='} {low:g}"
    if high is not None:
        text += f" <= {high:g}"
    if opt.nonzero:
        text += " != 0"
    return text


def _default_doc(opt: Option) -> str:
    value = opt.default
    if opt.default_doc is not None:
        return opt.default_doc
    if value is REQUIRED:
        return "**required**"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if opt.kind == "duration":
        return f"`{format_duration(value)}`"
    if opt.kind == "duration_map":
        return "`{" + ", ".join(f"{k}: {format_duration(v)}" for k, v in value.items()) + "}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if value == "":
        return '`""`'
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


# --- regeneration ------------------------------------------------------------------------------


def schema_text() -> str:
    """The committed form of the JSON Schema (stable key order, trailing newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the generated schema and reference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((SCHEMA_PATH, schema_text()), (DOCS_PATH, markdown_reference())):
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
