"""``gateway aas``: an asset as an Asset Administration Shell (metamodel v3), JSON or AASX.

Written with Eclipse BaSyx (``basyx-python-sdk``, the ``aas`` extra: ``pip install
'edge-gateway[aas]'``) from the gateway's newest model version in the cloud store: the shell
(its asset's global id is the asset's identifier), a **Nameplate** submodel (IDTA 02006 semantic
ids: manufacturer, product designation, serial number) and an **OperationalData** submodel with
one property per point of the asset: the point's semantic id, its UCUM unit and definition in
an embedded IEC 61360 data specification, its range and source address as qualifiers, and the
latest value in the store. Every file written is read back with BaSyx in strict mode (not
failsafe) and compared with what was meant before the command says OK.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cloud.export import ExportError, gateways, open_store
from gateway.core.records import STREAM_TELEMETRY, decode
from gateway.model.versions import Model, ModelVersions

if TYPE_CHECKING:
    from basyx.aas import model as aas

NAMEPLATE = "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
MANUFACTURER = "0173-1#02-AAO677#002"  # ManufacturerName
DESIGNATION = "0173-1#02-AAW338#001"  # ManufacturerProductDesignation
SERIAL = "0173-1#02-AAM556#002"  # SerialNumber
OPERATIONAL = "urn:edge-gateway:submodel:operational-data:1"
IEC61360 = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIEC61360/3/0"
_ID_SHORT = re.compile(r"[^A-Za-z0-9_-]")
LATEST_RECORDS = 2000  # telemetry records read back from the newest for the latest values


class AasError(Exception):
    """What to print: a missing library, an unknown asset, a file that does not read back."""


def _basyx() -> Any:
    try:
        from basyx.aas import model
    except ImportError:
        raise AasError(
            "the AAS export needs basyx-python-sdk: pip install 'edge-gateway[aas]'"
        ) from None
    return model


def _ref(text: str) -> aas.ExternalReference:
    m = _basyx()
    return m.ExternalReference((m.Key(m.KeyTypes.GLOBAL_REFERENCE, text),))


def _id_short(text: str) -> str:
    s = _ID_SHORT.sub("_", text)
    return s if s[:1].isalpha() else f"p_{s}"


def build(gw: Model, asset: dict[str, Any], latest: dict[str, Any]) -> Any:
    """The shell and its two submodels for ``asset`` of model ``gw``, in a BaSyx object store."""
    m = _basyx()
    path = str(asset["path"])
    base = f"urn:edge-gateway:{gw.gateway}:{path}"
    global_id = asset.get("identifier") or f"{base}:asset"
    plate = asset.get("nameplate") or {}
    nameplate = m.Submodel(
        id_=f"{base}:nameplate",
        id_short="Nameplate",
        semantic_id=_ref(NAMEPLATE),
        submodel_element=[
            m.MultiLanguageProperty(
                "ManufacturerName",
                m.MultiLanguageTextType({"en": plate.get("manufacturer") or "unknown"}),
                semantic_id=_ref(MANUFACTURER),
            ),
            m.MultiLanguageProperty(
                "ManufacturerProductDesignation",
                m.MultiLanguageTextType({"en": plate.get("model") or "unknown"}),
                semantic_id=_ref(DESIGNATION),
            ),
            m.Property("SerialNumber", str, plate.get("serial") or None, semantic_id=_ref(SERIAL)),
        ],
    )
    elements = [_property(m, p, latest.get(str(p.get("name")))) for p in gw.points_of(path)]
    operational = m.Submodel(
        id_=f"{base}:operational-data",
        id_short="OperationalData",
        semantic_id=_ref(OPERATIONAL),
        submodel_element=elements,
    )
    shell = m.AssetAdministrationShell(
        asset_information=m.AssetInformation(m.AssetKind.INSTANCE, global_asset_id=global_id),
        id_=f"{base}:aas",
        id_short=_id_short(str(asset.get("id", "asset"))),
        description=m.MultiLanguageTextType({"en": str(asset.get("name") or asset.get("id"))}),
        submodel={m.ModelReference.from_referable(nameplate),
                  m.ModelReference.from_referable(operational)},
    )  # fmt: skip
    return m.DictIdentifiableStore([shell, nameplate, operational])


def _property(m: Any, p: dict[str, Any], sample: Any) -> Any:
    boolean = p.get("type") == "bool"
    value: Any = None
    if sample is not None and sample["value"] is not None and sample["quality"] == "good":
        value = bool(sample["value"]) if boolean else float(sample["value"])
        if not boolean and not math.isfinite(value):
            value = None
    unit = str(p.get("unit") or "")
    content = m.DataSpecificationIEC61360(
        preferred_name=m.PreferredNameTypeIEC61360({"en": str(p.get("asset_point") or p["name"])}),
        data_type=m.DataTypeIEC61360.BOOLEAN if boolean else m.DataTypeIEC61360.REAL_MEASURE,
        definition=m.DefinitionTypeIEC61360({"en": str(p.get("description") or p["name"])}),
        unit=unit or None,
        source_of_definition=str(p.get("quantity") or "") or None,
    )
    qualifiers = [m.Qualifier("SourceAddress", str, str(p.get("source") or p["name"]))]
    rng = p.get("range")
    if isinstance(rng, list) and len(rng) == 2:
        qualifiers += [m.Qualifier("MinValue", float, float(rng[0])),
                       m.Qualifier("MaxValue", float, float(rng[1]))]  # fmt: skip
    return m.Property(
        _id_short(str(p.get("asset_point") or p["name"])),
        bool if boolean else float,
        value,
        semantic_id=_ref(str(p["semantic_id"])) if p.get("semantic_id") else None,
        qualifier=qualifiers,
        embedded_data_specifications=[m.EmbeddedDataSpecification(_ref(IEC61360), content)],
    )


def write(store: Any, shell_id: str, path: Path) -> None:
    """Write ``store`` as JSON or AASX (by the file's extension), atomically."""
    from basyx.aas.adapter import aasx
    from basyx.aas.adapter.json import write_aas_json_file

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if path.suffix.lower() == ".aasx":
            with aasx.AASXWriter(str(tmp)) as writer:
                writer.write_aas(shell_id, store, aasx.DictSupplementaryFileContainer())
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                write_aas_json_file(f, store)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> Any:
    """Read a JSON or AASX file with BaSyx in strict mode; AasError when it is not valid."""
    _basyx()
    from basyx.aas import model as m
    from basyx.aas.adapter import aasx
    from basyx.aas.adapter.json import read_aas_json_file

    try:
        if path.suffix.lower() == ".aasx":
            store: Any = m.DictIdentifiableStore()
            with aasx.AASXReader(str(path), failsafe=False) as reader:
                reader.read_into(store, aasx.DictSupplementaryFileContainer())
            return store
        with open(path, encoding="utf-8") as f:
            return read_aas_json_file(io.StringIO(f.read()), failsafe=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AasError(f"{path}: not a valid AAS file: {exc}") from None


def summary(store: Any) -> dict[str, Any]:
    """What a file says, in plain types: shells with their asset id, submodels with, per
    property, its semantic id, unit and value (for the read-back check and for tests)."""
    from basyx.aas import model as m

    out: dict[str, Any] = {"shells": {}, "submodels": {}}
    for obj in store:
        if isinstance(obj, m.AssetAdministrationShell):
            out["shells"][obj.id] = {
                "global_asset_id": obj.asset_information.global_asset_id,
                "submodels": sorted(ref.key[0].value for ref in obj.submodel),
            }
        elif isinstance(obj, m.Submodel):
            props: dict[str, Any] = {}
            for el in obj.submodel_element:
                sid = el.semantic_id.key[0].value if el.semantic_id else None
                unit = None
                for eds in el.embedded_data_specifications:
                    unit = getattr(eds.data_specification_content, "unit", None)
                if isinstance(el, m.MultiLanguageProperty):
                    value: Any = dict(el.value) if el.value else None
                else:
                    value = getattr(el, "value", None)
                props[el.id_short] = {"semantic_id": sid, "unit": unit, "value": value}
            out["submodels"][obj.id_short] = {
                "id": obj.id,
                "semantic_id": obj.semantic_id.key[0].value if obj.semantic_id else None,
                "properties": props,
            }
    return out


def latest_values(db: sqlite3.Connection, gateway: str, versions: ModelVersions) -> dict[str, Any]:
    """Newest sample per point name from the newest telemetry records (read-only)."""
    rows = db.execute(
        "SELECT payload FROM records WHERE gateway = ? AND stream = ? ORDER BY rowid DESC LIMIT ?",
        (gateway, STREAM_TELEMETRY, LATEST_RECORDS),
    ).fetchall()
    latest: dict[str, Any] = {}
    for (payload,) in rows:
        try:
            samples = versions.named(gateway, decode(bytes(payload)))
        except (ValueError, KeyError, TypeError):
            continue
        for s in samples:
            old = latest.get(s["point"])
            if old is None or s["ts"] > old["ts"]:
                latest[s["point"]] = s
    return latest


def export(db_path: str, gateway: str | None, asset_ref: str, out: Path) -> dict[str, Any]:
    """Write the AAS of ``asset_ref`` and check it by reading it back; returns its summary."""
    from gateway.cloud.models import from_db

    db = open_store(db_path)
    try:
        gw = _gateway(db, db_path, gateway)
        versions = from_db(db, gw)
        model = versions.latest(gw)
        if model is None:
            raise AasError(f"{db_path}: no model of {gw} stored yet (its meta records)")
        asset = model.asset(asset_ref)
        if asset is None:
            known = ", ".join(str(a.get("path")) for a in model.assets) or "none"
            raise AasError(f"no asset {asset_ref!r} in {gw}'s model {model.version}; it has: "
                           f"{known}")  # fmt: skip
        try:
            store = build(model, asset, latest_values(db, gw, versions))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AasError(f"{gw}'s model {model.version} cannot be made an AAS: {exc!r} "
                           "(a damaged meta record?)") from None  # fmt: skip
    finally:
        db.close()
    meant = summary(store)
    shell_id = next(iter(meant["shells"]))
    write(store, shell_id, out)
    back = summary(read(out))
    if back != meant:
        raise AasError(f"{out}: read back differs from what was written")
    return back


def _gateway(db: sqlite3.Connection, db_path: str, gateway: str | None) -> str:
    known = gateways(db)
    if gateway is None:
        if len(known) != 1:
            raise AasError(f"{db_path} holds {len(known)} gateways ({', '.join(known) or 'none'}"
                           "); choose one with --gateway")  # fmt: skip
        return known[0]
    if gateway not in known:
        raise AasError(f"{db_path}: no gateway {gateway!r}; it holds: {', '.join(known) or 'none'}")
    return gateway


def main(args: argparse.Namespace) -> int:
    try:
        if args.read:
            info = summary(read(Path(args.read)))
            print(f"gateway aas: {args.read}: valid; {len(info['shells'])} shell(s), "
                  f"submodels {', '.join(info['submodels'])}")  # fmt: skip
            return 0
        if not args.asset or not args.output:
            raise AasError("give --asset PATH and -o FILE.aasx|FILE.json (or --read FILE)")
        info = export(args.db, args.gateway, args.asset, Path(args.output))
    except (AasError, ExportError) as exc:
        print(f"gateway aas: {exc}", file=sys.stderr)
        return 2
    props = info["submodels"]["OperationalData"]["properties"]
    print(f"gateway aas: {args.output}: written and read back valid; {len(props)} operational "
          "properties", file=sys.stderr)  # fmt: skip
    return 0


def add_parser(sub: Any) -> None:
    """Register ``gateway aas`` under the ``gateway`` command's subparsers."""
    s = sub.add_parser(
        "aas",
        help="export an asset as an Asset Administration Shell (JSON or AASX)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    s.add_argument("--db", default="var/cloud.db", help="the receiver's store (read-only)")
    s.add_argument("--gateway", help="gateway id (default: the only one in the store)")
    s.add_argument("--asset", help="asset path or a tail of it (line1/press1), or its identifier")
    s.add_argument("-o", "--output", help="file to write: .aasx (package) or .json")
    s.add_argument("--read", metavar="FILE", help="only read and validate an AAS file")
    s.set_defaults(fn=main)
