"""The browsing half of ``gateway discover opcua``: walk the address space, read what each
variable says about itself, in batches and within bounds (see ``discover.py``).

A server with 10,000 variables costs a few dozen Browse and Read requests (``BATCH`` nodes or
values each), not one request per node: the difference between seconds and minutes on a PLC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.drivers.opcua.discover_yaml import Variable

if TYPE_CHECKING:
    from asyncua import Client

log = logging.getLogger("gateway.discover")


def _ua() -> Any:
    """asyncua's ``ua`` module, untyped: its NewType aliases (Int16, String...) make every
    NodeId(...) call a type error though asyncua takes plain ints and strings."""
    from asyncua import ua

    return ua


BATCH = 200  # nodes per Browse, values per Read, unless the server's OperationLimits say less
OBJECTS_FOLDER = "i=85"
REFERENCES_PER_BROWSE = 1000  # asked per node; the rest comes through BrowseNext
# References of one node, BrowseNext included: --max-nodes bounds the walk, this one node.
MAX_REFERENCES = 100_000
HAS_PROPERTY, HAS_SUBTYPE, HIERARCHICAL = 46, 45, 33
#: What the point ``type`` of each built-in DataType is (by its numeric id in namespace 0).
BUILTIN_TYPES = {
    1: "bool", 2: "int8", 3: "uint8", 4: "int16", 5: "uint16", 6: "int32", 7: "uint32",
    8: "int64", 9: "uint64", 10: "float32", 11: "float64", 12: "string", 13: "datetime",
    19: "statuscode", 29: "int32",  # Enumeration: its values are Int32 on the wire
}  # fmt: skip
#: Abstract DataTypes: the variable may hold any of several types; the current value decides.
ABSTRACT_TYPES = {24: "BaseDataType", 26: "Number", 27: "Integer", 28: "UInteger"}


class DiscoverError(Exception):
    """Discovery cannot go on: the message is the one line the operator reads."""


@dataclass
class Found:
    """A variable met while browsing, before its attributes are read."""

    node: Any  # ua.NodeId
    path: tuple[str, ...]
    display_name: str
    properties: dict[str, Any] = field(default_factory=dict)  # EngineeringUnits/EURange NodeIds


@dataclass
class Browsed:
    variables: list[Found]
    nodes: int  # Objects and Variables seen
    truncated: str = ""  # why the walk stopped early, if it did
    left_out: list[str] = field(default_factory=list)


def _status_text(code: Any) -> str:
    ua = _ua()

    try:
        return ua.StatusCode(code.value if hasattr(code, "value") else code).name
    except Exception:
        return f"0x{int(getattr(code, 'value', code)):08X}"


def parse_root(text: str) -> Any:
    ua = _ua()

    try:
        return ua.NodeId.from_string(text)
    except Exception:
        raise DiscoverError(
            f"--root {text!r} is not a NodeId; give one like i=85 (the Objects folder), "
            "ns=2;s=Line1.Press or ns=3;i=1001"
        ) from None


@dataclass(frozen=True)
class Batch:
    """Nodes per Browse, values per Read."""

    browse: int = BATCH
    read: int = BATCH


async def server_limits(client: Client) -> Batch:
    """``BATCH``, or the server's MaxNodesPerBrowse / MaxNodesPerRead where smaller: a PLC
    that allows 50 answers a Read of 200 with BadTooManyOperations, failing the whole walk."""
    ua = _ua()
    value = int(ua.AttributeIds.Value)
    got = await read_values(client, [(ua.NodeId(11710), value), (ua.NodeId(11705), value)], BATCH)

    def pick(limit: Any) -> int:
        return min(BATCH, int(limit)) if isinstance(limit, int) and limit > 0 else BATCH

    return Batch(pick(got[0]), pick(got[1]))


async def browse_all(
    client: Client, start: Root, depth: int, max_nodes: int, batch: Batch = Batch()
) -> Browsed:
    """Breadth first from ``root``, ``batch.browse`` nodes per Browse request, following hierarchical
    references forward to Objects and Variables. Properties (HasProperty) are metadata, not
    points: only a variable's EngineeringUnits and EURange are kept, as its ``properties``."""
    ua = _ua()

    root = start.node
    default_root = root == ua.NodeId.from_string(OBJECTS_FOLDER)
    seen = {root}
    frontier: list[tuple[Any, tuple[str, ...], bool]] = [(root, (), start.is_variable)]
    found: dict[Any, Found] = {}
    out = Browsed([], 0)
    if start.is_variable:  # --root names one variable: it is a point, its children too
        found[root] = Found(root, (start.browse_name,), start.display_name)
        out.variables.append(found[root])
        frontier = [(root, (start.browse_name,), True)]
    for level in range(depth + 1):
        # Objects at the depth limit would only yield children past it; variables there are
        # still browsed for their unit and range properties.
        todo = [f for f in frontier if level < depth or f[2]]
        if level == depth:
            cut = len(frontier) - len(todo)
            if cut:
                out.truncated = f"{cut} object(s) at --depth {depth} not browsed further"
        frontier = []
        for first in range(0, len(todo), batch.browse):
            chunk = todo[first : first + batch.browse]
            results = await _browse(client, [n for n, _, _ in chunk])
            for (parent, path, is_var), refs in zip(chunk, results, strict=True):
                for ref in refs:
                    child = ref.NodeId
                    if ref.ReferenceTypeId == ua.NodeId(HAS_PROPERTY):
                        if is_var and ref.BrowseName.Name in ("EngineeringUnits", "EURange"):
                            found[parent].properties[ref.BrowseName.Name] = child
                        continue
                    if level == depth or child in seen:
                        continue
                    if default_root and level == 0 and child.NamespaceIndex == 0:
                        out.left_out.append(f"{ref.BrowseName.Name} ({child.to_string()})")
                        continue  # the server's own objects (Server, Aliases...), not the machine's
                    if out.nodes >= max_nodes:
                        out.truncated = f"stopped at --max-nodes {max_nodes}"
                        break
                    seen.add(child)
                    out.nodes += 1
                    child_path = (*path, ref.BrowseName.Name)
                    child_var = ref.NodeClass == ua.NodeClass.Variable
                    if child_var:
                        found[child] = Found(child, child_path, ref.DisplayName.Text or "")
                        out.variables.append(found[child])
                    frontier.append((child, child_path, child_var))
        if not frontier:
            break
    return out


def _browse_request(
    nodes: list[Any], forward: bool, reference: int, subtypes: bool, classes: int = 0
) -> Any:
    """One BrowseRequest for ``nodes``: references of type ``reference`` (and its subtypes),
    to nodes of the ``classes`` mask (0: all), every field of each reference returned."""
    ua = _ua()
    params = ua.BrowseParameters()
    params.RequestedMaxReferencesPerNode = REFERENCES_PER_BROWSE
    for node in nodes:
        desc = ua.BrowseDescription()
        desc.NodeId = node
        desc.BrowseDirection = ua.BrowseDirection.Forward if forward else ua.BrowseDirection.Inverse
        desc.ReferenceTypeId = ua.NodeId(reference)
        desc.IncludeSubtypes = subtypes
        desc.NodeClassMask = classes
        desc.ResultMask = ua.BrowseResultMask.All
        params.NodesToBrowse.append(desc)
    return params


async def _browse(client: Client, nodes: list[Any]) -> list[list[Any]]:
    """Each node's forward hierarchical references to Objects and Variables, continuation
    points followed."""
    ua = _ua()

    classes = ua.NodeClass.Object | ua.NodeClass.Variable
    params = _browse_request(nodes, True, HIERARCHICAL, True, classes)
    results = await client.uaclient.browse(params)
    refs: list[list[Any]] = []
    for node, result in zip(nodes, results, strict=True):
        if not result.StatusCode.is_good():
            log.warning("browse %s: %s", node.to_string(), _status_text(result.StatusCode))
        got = list(result.References or [])
        cp = result.ContinuationPoint
        while cp and len(got) < MAX_REFERENCES:  # a server may hand out continuation points forever
            nxt = ua.BrowseNextParameters()
            nxt.ReleaseContinuationPoints = False  # asyncua's default (True) only releases it
            nxt.ContinuationPoints = [cp]
            more = (await client.uaclient.browse_next(nxt))[0]
            got += more.References or []
            cp = more.ContinuationPoint
        if cp:
            log.warning("browse %s: over %d references, the rest left out", node, MAX_REFERENCES)
            release = ua.BrowseNextParameters()
            release.ReleaseContinuationPoints = True
            release.ContinuationPoints = [cp]
            await client.uaclient.browse_next(release)
        # References to other servers (ServerIndex) cannot be read here.
        refs.append([r for r in got if not getattr(r.NodeId, "ServerIndex", 0)])
    return refs


async def read_values(client: Client, items: list[tuple[Any, int]], per_read: int) -> list[Any]:
    """Attribute values of ``(node, attribute id)`` pairs, ``per_read`` per Read; a Bad result
    is None."""
    ua = _ua()

    out: list[Any] = []
    for start in range(0, len(items), per_read):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        for node, attr in items[start : start + per_read]:
            rv = ua.ReadValueId()
            rv.NodeId = node
            rv.AttributeId = attr
            params.NodesToRead.append(rv)
        for dv in await client.uaclient.read(params):
            ok = dv.StatusCode is None or dv.StatusCode.is_good()
            out.append(dv.Value.Value if ok and dv.Value is not None else None)
    return out


@dataclass(frozen=True)
class Root:
    """Where the walk starts: a folder or object, or one variable (then it is a point too)."""

    node: Any
    display_name: str
    browse_name: str
    is_variable: bool


async def check_root(client: Client, root: Any) -> Root:
    """The root's names and class, or a clear error when the server has no such node."""
    ua = _ua()

    params = ua.ReadParameters()
    for attr in (
        ua.AttributeIds.NodeClass,
        ua.AttributeIds.DisplayName,
        ua.AttributeIds.BrowseName,
    ):
        rv = ua.ReadValueId()
        rv.NodeId, rv.AttributeId = root, attr
        params.NodesToRead.append(rv)
    answer: list[Any] = await client.uaclient.read(params)
    cls, name, browse = answer
    if not cls.StatusCode.is_good():
        raise DiscoverError(
            f"--root {root.to_string()}: the server has no such node "
            f"({_status_text(cls.StatusCode)}); browse from the Objects folder (the default, "
            "i=85) to see what is there"
        )
    if cls.Value.Value not in (ua.NodeClass.Object, ua.NodeClass.Variable, ua.NodeClass.View):
        raise DiscoverError(
            f"--root {root.to_string()} is a {ua.NodeClass(cls.Value.Value).name}, not an "
            "Object or Variable; give the folder or object that holds the variables"
        )
    text = (name.Value.Value.Text or "") if name.StatusCode.is_good() else ""
    bname = browse.Value.Value.Name if browse.StatusCode.is_good() else ""
    is_var = cls.Value.Value == ua.NodeClass.Variable
    return Root(root, text or bname or root.to_string(), bname or text or "point", is_var)


async def resolve_types(
    client: Client, data_types: set[Any], batch: Batch = Batch()
) -> dict[Any, str]:
    """Point type of every DataType: built-in ones directly, others (Duration, UtcTime, a
    server's own enumerations...) by walking HasSubtype up to a built-in one, one batched
    Browse per level. Unresolved: the DataType's name in brackets (the reason it is skipped)."""
    out: dict[Any, str] = {}
    parent_of: dict[Any, Any] = {}
    todo = set()
    for dt in data_types:
        known = _builtin(dt)
        if known:
            out[dt] = known
        else:
            todo.add(dt)
    chains = {dt: dt for dt in todo}  # original -> current ancestor
    for _ in range(8):
        if not chains:
            break
        ask = sorted({a for a in chains.values() if a not in parent_of}, key=str)
        for start in range(0, len(ask), batch.browse):
            chunk = ask[start : start + batch.browse]
            params = _browse_request(chunk, False, HAS_SUBTYPE, False)
            for node, result in zip(chunk, await client.uaclient.browse(params), strict=True):
                refs = result.References or []
                parent_of[node] = refs[0].NodeId if refs else None
        for dt, cur in list(chains.items()):
            parent = parent_of.get(cur)
            known = _builtin(parent, top=False) if parent is not None else ""
            if known.startswith("["):
                out[dt] = f"[{_type_name(dt)}]"  # the reason names the variable's own type
                del chains[dt]
            elif known or parent is None:
                out[dt] = known or f"[{_type_name(dt)}]"
                del chains[dt]
            else:
                chains[dt] = parent
    for dt in chains:
        out[dt] = f"[{_type_name(dt)}]"
    return out


def _builtin(dt: Any, top: bool = True) -> str:
    """Point type of a namespace-0 DataType; "" when its supertype must decide.

    ``top``: ``dt`` is the variable's own DataType, not a supertype met on the way up: only
    then does an abstract type mean "the value decides" (a subtype of BaseDataType that is not
    built in, a Structure say, has no point type).
    """
    if dt.NamespaceIndex != 0 or not isinstance(dt.Identifier, int):
        return ""
    if dt.Identifier in ABSTRACT_TYPES:
        return "*" if top else f"[{_type_name(dt)}]"
    if dt.Identifier in BUILTIN_TYPES:
        return BUILTIN_TYPES[dt.Identifier]
    if dt.Identifier <= 25 or dt.Identifier == 22:  # Guid, ByteString, LocalizedText, Structure...
        return f"[{_type_name(dt)}]"
    return ""


def _type_name(dt: Any) -> str:
    ua = _ua()

    if dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int):
        name = ua.ObjectIdNames.get(dt.Identifier)
        if name:
            return str(name)
    return str(dt.to_string())


def _value_type(value: Any) -> str:
    """Point type of a Variant, for variables of an abstract DataType."""
    vt = getattr(value, "VariantType", None)
    return BUILTIN_TYPES.get(int(vt.value), "") if vt is not None else ""


async def describe(client: Client, found: list[Found], batch: Batch = Batch()) -> list[Variable]:
    """Read every variable's attributes and unit/range properties in batches."""
    ua = _ua()

    attrs = (
        ua.AttributeIds.DataType,
        ua.AttributeIds.ValueRank,
        ua.AttributeIds.ArrayDimensions,
        ua.AttributeIds.AccessLevel,
        ua.AttributeIds.UserAccessLevel,
        ua.AttributeIds.Description,
    )
    items = [(f.node, int(a)) for f in found for a in attrs]
    props = [(f, key, nid) for f in found for key, nid in f.properties.items()]
    items += [(nid, int(ua.AttributeIds.Value)) for _, _, nid in props]
    values = await read_values(client, items, batch.read)
    per = len(attrs)
    prop_values: dict[tuple[int, str], Any] = {}
    for (f, key, _), value in zip(props, values[per * len(found) :], strict=True):
        prop_values[(id(f), key)] = value
    data_types = {values[i * per] for i in range(len(found)) if values[i * per] is not None}
    types = await resolve_types(client, data_types, batch)
    abstract = [i for i, _ in enumerate(found) if types.get(values[i * per]) == "*"]
    value_of = [(found[i].node, int(ua.AttributeIds.Value)) for i in abstract]
    current = await read_values(client, value_of, batch.read)
    value_types = dict(zip(abstract, current, strict=True))
    out = []
    for i, f in enumerate(found):
        dt, rank, dims, access, user_access, desc = values[i * per : (i + 1) * per]
        v = Variable(f.node.to_string(), f.path, f.display_name)
        v.description = (desc.Text or "") if desc is not None else ""
        v.data_type = _type_name(dt) if dt is not None else "unknown"
        v.type = types.get(dt, "") if dt is not None else ""
        if v.type == "*":
            vt = value_types.get(i)
            v.type = _value_type(vt) if vt is not None else ""
            v.type_note = f"type from the current value (DataType {v.data_type})"
        if v.type.startswith("[") or not v.type:
            v.skip = f"DataType {v.data_type} has no point type"
        elif rank is not None and rank >= 0:
            shape = f", dimensions {list(dims)}" if dims else ""
            v.skip = f"array of {v.type} (ValueRank {rank}{shape}): discovery writes scalars only"
        access = access if access is not None else 0
        if user_access is not None:
            access &= user_access
        if not access & ua.AccessLevel.CurrentRead.mask:
            v.skip = v.skip or "not readable (AccessLevel)"
        v.writable = bool(access & ua.AccessLevel.CurrentWrite.mask)
        eu = prop_values.get((id(f), "EngineeringUnits"))
        if eu is not None and hasattr(eu, "DisplayName"):
            v.unit = eu.DisplayName.Text or eu.Description.Text or ""
        rng = prop_values.get((id(f), "EURange"))
        if rng is not None and hasattr(rng, "Low"):
            v.range = (float(rng.Low), float(rng.High))
        out.append(v)
    return out
