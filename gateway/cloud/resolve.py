"""``gateway resolve``: an identifier to the asset it names, its model and its latest values.

"One code per thing": a GS1 Digital Link, a Handle, an OID URN or any URI an asset carries in
its gateway's ``assets:`` resolves to that asset. Resolvers are pluggable (the
:class:`Resolver` protocol, registered by scheme or as a fallback); the default is the
:class:`LocalRegistry`, built from the birth records in the cloud store, which needs no account
and no network. A resolver for a public service (GS1 resolver, the Handle system, the industrial
identifier resolution system) implements the same protocol and is placed before it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.cloud.export import ExportError, gateways, open_store
from gateway.jsonsafe import dumps
from gateway.model.identifiers import IdentifierError
from gateway.model.identifiers import parse as parse_identifier
from gateway.model.versions import ModelVersions


@dataclass
class Resolution:
    """What an identifier names: the gateway, the asset (as in the birth record), the model
    version it was read from, the asset's points, and their latest samples when known."""

    identifier: str
    scheme: str
    gateway: str
    asset: dict[str, Any]
    model: str
    points: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, Any] = field(default_factory=dict)
    resolver: str = "local"

    def to_json(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier, "scheme": self.scheme, "resolver": self.resolver,
            "gateway": self.gateway, "model": self.model, "asset": self.asset,
            "points": self.points, "latest": self.latest,
        }  # fmt: skip


class Resolver(Protocol):
    """Resolves an identifier; None when it does not know it (the next resolver is asked)."""

    name: str

    def resolve(self, identifier: str) -> Resolution | None: ...


class LocalRegistry:
    """Identifiers of every gateway's newest model version in a cloud store (read-only)."""

    name = "local"

    def __init__(self, db: sqlite3.Connection) -> None:
        from gateway.cloud.models import from_db

        self._db = db
        self._versions: dict[str, ModelVersions] = {gw: from_db(db, gw) for gw in gateways(db)}

    def identifiers(self) -> dict[str, tuple[str, str]]:
        """identifier -> (gateway, asset path), from each gateway's newest model."""
        out: dict[str, tuple[str, str]] = {}
        for gw, versions in self._versions.items():
            model = versions.latest(gw)
            for a in model.assets if model else ():
                if a.get("identifier"):
                    out[str(a["identifier"])] = (gw, str(a["path"]))
        return out

    def resolve(self, identifier: str) -> Resolution | None:
        from gateway.cloud.aas import latest_values

        for gw, versions in self._versions.items():
            model = versions.latest(gw)
            for a in model.assets if model else ():
                if a.get("identifier") != identifier:
                    continue
                points = model.points_of(str(a["path"])) if model else []
                values = latest_values(self._db, gw, versions)
                latest = {
                    str(p.get("asset_point") or p["name"]): values[p["name"]]
                    for p in points
                    if p["name"] in values
                }
                return Resolution(
                    identifier, str(a.get("scheme") or "uri"), gw, a,
                    model.version if model else "", points, latest,
                )  # fmt: skip
        return None


class Resolvers:
    """Resolvers asked in order (by scheme first, then the fallbacks)."""

    def __init__(self, fallback: list[Resolver] | None = None) -> None:
        self._by_scheme: dict[str, list[Resolver]] = {}
        self._fallback: list[Resolver] = list(fallback or [])

    def register(self, resolver: Resolver, scheme: str | None = None) -> None:
        """Add ``resolver`` for one scheme (``gs1``, ``handle``, ``oid``, ``uri``) or for all."""
        if scheme is None:
            self._fallback.insert(0, resolver)
        else:
            self._by_scheme.setdefault(scheme, []).append(resolver)

    def resolve(self, identifier: str) -> Resolution | None:
        scheme = parse_identifier(identifier).scheme  # IdentifierError for a malformed one
        for resolver in [*self._by_scheme.get(scheme, []), *self._fallback]:
            found = resolver.resolve(identifier)
            if found is not None:
                found.resolver = resolver.name
                return found
        return None


def main(args: argparse.Namespace) -> int:
    try:
        db = open_store(args.db)
    except ExportError as exc:
        print(f"gateway resolve: {exc}", file=sys.stderr)
        return 2
    try:
        registry = LocalRegistry(db)
        try:
            found = Resolvers([registry]).resolve(args.identifier)
        except IdentifierError as exc:
            print(f"gateway resolve: {exc}", file=sys.stderr)
            return 2
        if found is None:
            known = registry.identifiers()
            print(f"gateway resolve: {args.identifier}: not known to any resolver "
                  f"({len(known)} identifier(s) in {args.db})", file=sys.stderr)  # fmt: skip
            return 1
        print(dumps(found.to_json()))
        return 0
    finally:
        db.close()


def add_parser(sub: Any) -> None:
    """Register ``gateway resolve`` under the ``gateway`` command's subparsers."""
    s = sub.add_parser(
        "resolve",
        help="resolve an asset identifier to its model and latest values (JSON)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    s.add_argument("identifier", help="GS1 Digital Link, Handle, OID URN or any URI")
    s.add_argument("--db", default="var/cloud.db", help="the receiver's store (read-only)")
    s.set_defaults(fn=main)
