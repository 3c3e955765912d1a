"""Fleet topology: shard -> host -> rack -> cooling zone / switch, and adapters for real tool output.

Adapters parse the text the tools print and raise :class:`~deploysignal.InputError` naming the line
(``row``) and field (``column``) of malformed output:

- Slurm: ``scontrol show node`` (records of ``Key=Value``), ``scontrol show topology`` (switch tree),
  ``sinfo -N -h -o "%N %P %G %T"``-style node lines.
- Kubernetes: ``kubectl get nodes -o json`` with topology labels.
- NVIDIA: ``nvidia-smi topo -m`` matrix (GPU shards of one host, NVLink domains).
- AWS Neuron: ``neuron-ls --json-output``; Trainium (trn1, trn1n, trn2: 16 devices in a 4x4 2D torus)
  and Inferentia2 (inf2: a ring) are distinct adapters (:func:`parse_trainium_ls`,
  :func:`parse_inferentia_ls`) that keep each device's NeuronLink neighbours, so
  :meth:`TopologySnapshot.link_hops` gives torus / ring hop distances.
- Google TPU: ``gcloud compute tpus tpu-vm describe --format=json``; chips per TensorCore count from
  :data:`TPU_CORES_PER_CHIP` (one row per generation).

:func:`fetch_snapshot` merges any subset of these; missing levels stay ``None`` (sparse data is fine:
attribution only walks the levels it knows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .._exceptions import InputError

__all__ = [
    "LEVELS",
    "NEURON_FAMILIES",
    "TPU_CORES_PER_CHIP",
    "NeuronFamily",
    "Shard",
    "TopologySnapshot",
    "expand_hostlist",
    "fetch_snapshot",
    "parse_k8s_nodes",
    "parse_inferentia_ls",
    "parse_neuron_ls",
    "parse_nvidia_smi_topo",
    "parse_scontrol_nodes",
    "parse_scontrol_topology",
    "parse_sinfo",
    "parse_tpu_describe",
    "parse_trainium_ls",
]

#: topology levels above a shard, nearest first (hop distance = index + 1)
LEVELS = ("host", "nvlink", "rack", "switch", "zone")


@dataclass(frozen=True, slots=True)
class Shard:
    """One observed unit (a GPU, NeuronCore device or TPU chip) and where it sits.

    ``links`` are the shard ids it is wired to directly over the device interconnect (NeuronLink,
    NVLink); :meth:`TopologySnapshot.link_hops` walks them. ``attrs`` carries adapter facts such as
    ``("accelerator", "trn1")`` and ``("interconnect", "torus 4x4")``.
    """

    shard_id: str
    host: str | None = None
    nvlink: str | None = None
    rack: str | None = None
    switch: str | None = None
    zone: str | None = None
    attrs: tuple[tuple[str, str], ...] = field(default=())
    links: tuple[str, ...] = field(default=())

    def node(self, level: str) -> str | None:
        return getattr(self, level)

    def attr(self, key: str) -> str | None:
        return next((v for k, v in self.attrs if k == key), None)


@dataclass(frozen=True)
class TopologySnapshot:
    """An immutable map of shards to their topology nodes.

    Shards keep the order given; ``index`` maps id -> position (the row in fleet arrays).

    Examples
    --------
    >>> snap = TopologySnapshot.from_shards([Shard("g0", host="h0", rack="r0"), Shard("g1", host="h0", rack="r0")])
    >>> snap.members("rack", "r0"), snap.hops("g0", "g1")
    (('g0', 'g1'), 1)
    """

    shards: tuple[Shard, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.shards:
            if s.shard_id in seen:
                raise InputError(f"duplicate shard id {s.shard_id!r}", column="shard_id")
            seen.add(s.shard_id)

    @classmethod
    def from_shards(cls, shards: Iterable[Shard]) -> TopologySnapshot:
        return cls(tuple(shards))

    @classmethod
    def synthetic(
        cls, n_racks: int, hosts_per_rack: int, shards_per_host: int, *, racks_per_zone: int = 4,
        racks_per_switch: int = 2,
    ) -> TopologySnapshot:
        """A regular fleet (used by demos, benchmarks and Monte Carlo)."""
        out = []
        for r in range(n_racks):
            for h in range(hosts_per_rack):
                host = f"r{r:03d}-h{h:02d}"
                for g in range(shards_per_host):
                    out.append(Shard(
                        f"{host}-g{g}", host=host, nvlink=f"{host}-nvl{g // 4}", rack=f"r{r:03d}",
                        switch=f"sw{r // racks_per_switch:03d}", zone=f"z{r // racks_per_zone:02d}",
                    ))
        return cls(tuple(out))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.shard_id for s in self.shards)

    @cached_property
    def index(self) -> dict[str, int]:
        return {s.shard_id: i for i, s in enumerate(self.shards)}

    def __len__(self) -> int:
        return len(self.shards)

    def nodes(self, level: str) -> tuple[str, ...]:
        """Distinct node names at ``level`` (sorted)."""
        if level not in LEVELS:
            raise InputError(f"unknown topology level {level!r}; valid: {', '.join(LEVELS)}")
        return tuple(sorted({n for s in self.shards if (n := s.node(level)) is not None}))

    def members(self, level: str, node: str) -> tuple[str, ...]:
        return self._members(level).get(node, ())

    def _members(self, level: str) -> dict[str, tuple[str, ...]]:
        cache = self.__dict__.setdefault("_member_cache", {})
        if level not in cache:
            acc: dict[str, list[str]] = {}
            for s in self.shards:
                if (n := s.node(level)) is not None:
                    acc.setdefault(n, []).append(s.shard_id)
            cache[level] = {k: tuple(v) for k, v in acc.items()}
        return cache[level]

    def group_index(self, level: str) -> tuple[tuple[str, ...], list[int]]:
        """(node names, per-shard node index with -1 for unknown) at ``level``."""
        names = self.nodes(level)
        pos = {n: i for i, n in enumerate(names)}
        return names, [pos.get(s.node(level), -1) if s.node(level) is not None else -1 for s in self.shards]

    def hops(self, a: str, b: str) -> int | None:
        """Hop distance: 0 same shard, ``LEVELS.index(level)+1`` for the nearest shared known level."""
        idx = self.index
        sa, sb = self.shards[idx[a]], self.shards[idx[b]]
        if a == b:
            return 0
        for h, level in enumerate(LEVELS, start=1):
            na, nb = sa.node(level), sb.node(level)
            if na is not None and na == nb:
                return h
        return None

    def link_hops(self, a: str, b: str) -> int | None:
        """Hops between two shards over the device interconnect (``Shard.links``): 0 for the same
        shard, 1 for direct neighbours, ... (breadth-first search); ``None`` when no chain of links
        joins them (other hosts, or an adapter that does not report links).

        Examples
        --------
        >>> ring = [Shard(f"d{i}", host="h", links=(f"d{(i - 1) % 6}", f"d{(i + 1) % 6}")) for i in range(6)]
        >>> snap = TopologySnapshot.from_shards(ring)
        >>> snap.link_hops("d0", "d1"), snap.link_hops("d0", "d3"), snap.link_hops("d0", "d5")
        (1, 3, 1)
        """
        idx = self.index
        if a not in idx or b not in idx:
            raise InputError(f"unknown shard {a if a not in idx else b!r}", column="shard_id")
        if a == b:
            return 0
        seen, frontier, d = {a}, [a], 0
        while frontier:
            d += 1
            nxt = []
            for s in frontier:
                for n in self.shards[idx[s]].links:
                    if n == b:
                        return d
                    if n in idx and n not in seen:
                        seen.add(n)
                        nxt.append(n)
            frontier = nxt
        return None

    def subset(self, ids: Iterable[str]) -> TopologySnapshot:
        keep = set(ids)
        return TopologySnapshot(tuple(s for s in self.shards if s.shard_id in keep))


# --------------------------------------------------------------------------- helpers
_HOSTLIST = re.compile(r"^(?P<prefix>[^\[\],]*)\[(?P<ranges>[^\]]+)\](?P<suffix>[^\[\],]*)$")


def expand_hostlist(expr: str, *, line: int | None = None, field_name: str = "Nodes") -> list[str]:
    """Expand a Slurm hostlist (``gpu-a[01-03,07],gpu-b01``).

    Examples
    --------
    >>> expand_hostlist("gpu-a[01-03,07],gpu-b01")
    ['gpu-a01', 'gpu-a02', 'gpu-a03', 'gpu-a07', 'gpu-b01']
    """
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in expr.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise InputError(f"unbalanced ']' in hostlist {expr!r}", row=line, column=field_name)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise InputError(f"unbalanced '[' in hostlist {expr!r}", row=line, column=field_name)
    parts.append(cur)
    out: list[str] = []
    for p in parts:
        if not p:
            continue
        m = _HOSTLIST.match(p)
        if "[" not in p:
            out.append(p)
            continue
        if m is None:
            raise InputError(f"cannot parse hostlist element {p!r}", row=line, column=field_name)
        for rng in m["ranges"].split(","):
            if "-" in rng:
                lo, hi = rng.split("-", 1)
                if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                    raise InputError(f"bad range {rng!r} in hostlist {expr!r}", row=line, column=field_name)
                out.extend(f"{m['prefix']}{v:0{len(lo)}d}{m['suffix']}" for v in range(int(lo), int(hi) + 1))
            elif rng.isdigit():
                out.append(f"{m['prefix']}{rng}{m['suffix']}")
            else:
                raise InputError(f"bad range {rng!r} in hostlist {expr!r}", row=line, column=field_name)
    return out


def _gpu_count(gres: str, *, line: int | None, field_name: str) -> int:
    """GPU count from a Slurm Gres string (``gpu:a100:8(S:0-1)``, ``gpu:4``, ``(null)``)."""
    total = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        if not item.startswith("gpu"):
            continue
        last = item.split(":")[-1]
        if not last.isdigit():
            raise InputError(f"cannot read a GPU count from Gres {gres!r}", row=line, column=field_name)
        total += int(last)
    return total


def _host_shards(host: str, n: int, **where: str | None) -> list[Shard]:
    if n <= 0:
        return [Shard(host, host=host, **where)]
    return [Shard(f"{host}/gpu{g}", host=host, **where) for g in range(n)]


# --------------------------------------------------------------------------- Slurm
_KV = re.compile(r"(\w+)=(\S*(?: \S+(?==))?)")


def _kv_tokens(line: str, lineno: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in line.split():
        if "=" not in tok:
            # Slurm prints a few free-text values (Reason=... [user@time]); attach to the last key
            if out:
                last = next(reversed(out))
                out[last] += " " + tok
                continue
            raise InputError(f"expected Key=Value, got {tok!r}", row=lineno)
        k, v = tok.split("=", 1)
        if not k:
            raise InputError(f"empty key in {tok!r}", row=lineno)
        out[k] = v
    return out


def parse_scontrol_nodes(text: str, *, rack_feature: str = "rack", zone_feature: str = "zone") -> list[Shard]:
    """Parse ``scontrol show node`` output into GPU shards.

    Each ``NodeName=`` record becomes ``Gres`` GPU count shards (one shard if the node has no GPU).
    Rack and zone come from node features ``rack=<r>`` / ``rack-<r>`` / ``zone=<z>`` when present.
    """
    records: list[tuple[int, dict[str, str]]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        kv = _kv_tokens(line, lineno)
        if "NodeName" in kv:
            records.append((lineno, kv))
        elif not records:
            raise InputError("output does not start with a NodeName= record", row=lineno, column="NodeName")
        else:
            records[-1][1].update(kv)
    if not records:
        raise InputError("no NodeName= records in scontrol output", row=1, column="NodeName")
    shards: list[Shard] = []
    for lineno, kv in records:
        name = kv["NodeName"]
        if not name:
            raise InputError("empty NodeName", row=lineno, column="NodeName")
        n = _gpu_count(kv.get("Gres", "(null)"), line=lineno, field_name="Gres")
        feats = [f for f in re.split(r"[,\s]+", kv.get("ActiveFeatures", kv.get("AvailableFeatures", ""))) if f]
        rack = zone = None
        for f in feats:
            m = re.match(rf"^{rack_feature}[=:_-](.+)$", f)
            if m:
                rack = m.group(1)
            m = re.match(rf"^{zone_feature}[=:_-](.+)$", f)
            if m:
                zone = m.group(1)
        shards.extend(_host_shards(name, n, rack=rack, zone=zone))
    return shards


def parse_scontrol_topology(text: str) -> dict[str, dict[str, str]]:
    """Parse ``scontrol show topology``: host -> {"rack": leaf switch, "switch": its parent switch}.

    Leaf switches (``Level=0``, with ``Nodes=``) are taken as racks (top-of-rack); their parent
    (the switch listing them in ``Switches=``) as the aggregation switch.
    """
    leaf_hosts: dict[str, list[str]] = {}
    parent: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        kv = _kv_tokens(line, lineno)
        name = kv.get("SwitchName")
        if not name:
            raise InputError("expected a SwitchName= record", row=lineno, column="SwitchName")
        if "Level" in kv and not kv["Level"].isdigit():
            raise InputError(f"Level must be an integer, got {kv['Level']!r}", row=lineno, column="Level")
        if kv.get("Nodes") and not kv.get("Switches"):
            leaf_hosts[name] = expand_hostlist(kv["Nodes"], line=lineno, field_name="Nodes")
        if kv.get("Switches"):
            for child in expand_hostlist(kv["Switches"], line=lineno, field_name="Switches"):
                parent[child] = name
    if not leaf_hosts:
        raise InputError("no switch lists any Nodes=", row=1, column="Nodes")
    out: dict[str, dict[str, str]] = {}
    for sw, hosts in leaf_hosts.items():
        for h in hosts:
            out[h] = {"rack": sw, **({"switch": parent[sw]} if sw in parent else {})}
    return out


def parse_sinfo(text: str) -> list[Shard]:
    """Parse ``sinfo -N -h -o "%N %P %G %T"`` (or with a header line ``NODELIST PARTITION GRES STATE``)."""
    shards: list[Shard] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.upper().startswith("NODELIST"):
            continue
        cols = line.split()
        if len(cols) < 3:
            raise InputError(f"expected NODELIST PARTITION GRES [STATE], got {len(cols)} field(s)", row=lineno)
        n = _gpu_count(cols[2], line=lineno, field_name="GRES")
        for host in expand_hostlist(cols[0], line=lineno, field_name="NODELIST"):
            if host in seen:  # a node in several partitions is listed once per partition
                continue
            seen.add(host)
            shards.extend(_host_shards(host, n))
    if not shards:
        raise InputError("no node lines in sinfo output", row=1, column="NODELIST")
    return shards


# --------------------------------------------------------------------------- Kubernetes
_K8S_ZONE = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
_K8S_RACK = ("topology.kubernetes.io/rack", "cloud.google.com/gce-topology-subblock", "rack")
_K8S_SWITCH = ("network.topology.kubernetes.io/spine", "topology.kubernetes.io/switch",
               "cloud.google.com/gce-topology-block")
_K8S_GPU = ("nvidia.com/gpu", "aws.amazon.com/neurondevice", "google.com/tpu", "amd.com/gpu")


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what}: invalid JSON ({exc.msg})", row=exc.lineno, column=f"char {exc.colno}") from exc


def parse_k8s_nodes(text: str) -> list[Shard]:
    """Parse ``kubectl get nodes -o json``: one shard per allocatable accelerator, topology from labels."""
    doc = _load_json(text, "kubectl get nodes")
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise InputError("expected a NodeList object with an 'items' list", column="items")
    shards: list[Shard] = []
    for i, item in enumerate(doc["items"]):
        where = f"items[{i}]"
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise InputError("node without metadata.name", column=f"{where}.metadata.name")
        labels = meta.get("labels") or {}
        if not isinstance(labels, dict):
            raise InputError("labels must be an object", column=f"{where}.metadata.labels")
        status = item.get("status") or {}
        res = status.get("allocatable") or status.get("capacity") or {}
        n = 0
        for key in _K8S_GPU:
            if key in res:
                try:
                    n = int(str(res[key]))
                except ValueError:
                    raise InputError(f"non-integer count {res[key]!r}",
                                     column=f"{where}.status.allocatable.{key}") from None
                break

        def first(keys: tuple[str, ...]) -> str | None:
            return next((str(labels[k]) for k in keys if k in labels), None)

        shards.extend(_host_shards(meta["name"], n, rack=first(_K8S_RACK), switch=first(_K8S_SWITCH),
                                   zone=first(_K8S_ZONE)))
    if not shards:
        raise InputError("NodeList has no items", column="items")
    return shards


def _components(nodes: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    """Connected components (union-find); each node maps to the smallest id of its component."""
    parent = {d: d for d in nodes}

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {d: find(d) for d in nodes}


# --------------------------------------------------------------------------- nvidia-smi
def parse_nvidia_smi_topo(text: str, host: str) -> list[Shard]:
    """Parse ``nvidia-smi topo -m``: GPU shards of ``host``; GPUs joined by NVLink (``NV#``) or an
    NVSwitch share an ``nvlink`` domain (connected components of the NV# graph), and each GPU keeps its
    ``NV#`` peers as ``links`` (:meth:`TopologySnapshot.link_hops`)."""
    lines = [(i, ln.rstrip("\n")) for i, ln in enumerate(text.splitlines(), start=1)]
    header = next(((i, ln) for i, ln in lines if ln.strip().startswith("GPU0")), None)
    if header is None:
        raise InputError("no header row starting with GPU0", row=1, column="GPU0")
    hi, hline = header
    cols = [c.strip() for c in re.split(r"\t+| {2,}", hline.strip()) if c.strip()]
    gpu_cols = [c for c in cols if re.fullmatch(r"GPU\d+", c)]
    rows: dict[str, list[str]] = {}
    for i, ln in lines:
        if i <= hi:
            continue
        s = ln.strip()
        if not s or s.startswith("Legend"):
            if s.startswith("Legend"):
                break
            continue
        cells = [c.strip() for c in re.split(r"\t+| {2,}", s) if c.strip()]
        if not re.fullmatch(r"(GPU|NIC|mlx|NVSwitch)\w*", cells[0]):
            raise InputError(f"unexpected row label {cells[0]!r}", row=i, column="row label")
        if not cells[0].startswith("GPU"):
            continue
        if len(cells) < 1 + len(gpu_cols):
            raise InputError(f"row has {len(cells) - 1} cells, header has {len(gpu_cols)} GPU columns", row=i,
                             column=cells[0])
        for j, c in enumerate(cells[1:1 + len(gpu_cols)]):
            if not re.fullmatch(r"X|NV\d+|SYS|NODE|PHB|PXB|PIX|SOC|PHB|NVSWITCH|NVL\d*", c):
                raise InputError(f"unknown link type {c!r}", row=i, column=gpu_cols[j])
        rows[cells[0]] = cells[1:1 + len(gpu_cols)]
    missing = [g for g in gpu_cols if g not in rows]
    if missing:
        raise InputError(f"matrix has no row for {', '.join(missing)}", row=hi, column=missing[0])
    num = [int(g[3:]) for g in gpu_cols]
    edges = [(int(g[3:]), num[j]) for g, cells in rows.items() for j, c in enumerate(cells) if c.startswith("NV")]
    comp = _components(num, edges)
    nbrs: dict[int, set[int]] = {d: set() for d in num}
    for a, b in edges:
        if a != b:
            nbrs[a].add(b)
            nbrs[b].add(a)
    return [Shard(f"{host}/gpu{d}", host=host, nvlink=f"{host}/nvl-gpu{comp[d]}", attrs=(("accelerator", "nvidia"), ("interconnect", "nvlink")),
                  links=tuple(f"{host}/gpu{c}" for c in sorted(nbrs[d]))) for d in num]


# --------------------------------------------------------------------------- AWS Neuron
@dataclass(frozen=True)
class NeuronFamily:
    """An AWS Neuron instance family: its chip, how the chips of one instance are wired and how many
    chips its sizes have.

    ``interconnect`` is ``"torus"`` (a ``torus`` = rows x columns 2D torus with wrap-around: each chip
    has 4 NeuronLink neighbours) or ``"ring"`` (each chip has 2).
    """

    name: str
    chip: str
    interconnect: str
    sizes: tuple[int, ...]
    torus: tuple[int, int] | None = None
    #: devices per instance size (the part after the dot: ``32xlarge`` -> 16)
    size_devices: tuple[tuple[str, int], ...] = ()


#: Instance families by the prefix of their instance type (``trn1.32xlarge`` -> ``trn1``). Sources (AWS
#: Neuron documentation, "Neuron architecture"; the EC2 instance-type pages of Trn1, Trn2 and Inf2 for
#: the device count of each size): Trn1/Trn1n, 1 (trn1.2xlarge) or 16 (trn1.32xlarge, trn1n.32xlarge)
#: Trainium chips whose NeuronLink-v2 is a 2D torus (older pages call it a 4D hypercube, the same graph
#: as a 4x4 torus); Trn2, 1 (trn2.3xlarge) or 16 (trn2.48xlarge) Trainium2 chips on NeuronLink-v3's 4x4
#: torus; Inf2, 1 (inf2.xlarge, inf2.8xlarge), 6 (inf2.24xlarge) or 12 (inf2.48xlarge) Inferentia2
#: chips. The Inf2 ring is an assumption: the Inf2 pages name NeuronLink-v2 but no shape in text; a
#: capture whose links are not a ring is refused by :func:`parse_inferentia_ls` (use
#: :func:`parse_neuron_ls`, which keeps the reported links unchecked).
NEURON_FAMILIES: dict[str, NeuronFamily] = {
    "trn1": NeuronFamily("trn1", "Trainium", "torus", (1, 16), (4, 4), (("2xlarge", 1), ("32xlarge", 16))),
    "trn1n": NeuronFamily("trn1n", "Trainium", "torus", (16,), (4, 4), (("32xlarge", 16),)),
    "trn2": NeuronFamily("trn2", "Trainium2", "torus", (1, 16), (4, 4), (("3xlarge", 1), ("48xlarge", 16))),
    "inf2": NeuronFamily("inf2", "Inferentia2", "ring", (1, 6, 12),
                         size_devices=(("xlarge", 1), ("8xlarge", 1), ("24xlarge", 6), ("48xlarge", 12))),
}

_PARTIAL_VIEW = ("; inside a container allocated part of the instance neuron-ls lists only the visible devices, whose "
                 "wiring cannot be checked against the family's: read it without the instance type (`fleet topology "
                 "--from neuron-ls` without --instance-type, `fleet observe --topology neuron:FILE@HOST`), which keeps "
                 "the reported links unchecked")


def _neuron_devices(text: str) -> dict[int, list[int]]:
    """Device id -> ``connected_to`` list from ``neuron-ls --json-output``."""
    doc = _load_json(text, "neuron-ls")
    if not isinstance(doc, list) or not doc:
        raise InputError("expected a non-empty JSON list of devices", column="[]")
    links: dict[int, list[int]] = {}
    for i, dev in enumerate(doc):
        if not isinstance(dev, dict) or not isinstance(dev.get("neuron_device"), int):
            raise InputError("device without integer 'neuron_device'", column=f"[{i}].neuron_device")
        conn = dev.get("connected_to", [])
        if conn is None:
            conn = []
        if not isinstance(conn, list) or not all(isinstance(c, int) for c in conn):
            raise InputError("'connected_to' must be a list of device ids", column=f"[{i}].connected_to")
        if dev["neuron_device"] in links:
            raise InputError(f"device {dev['neuron_device']} listed twice", column=f"[{i}].neuron_device")
        links[dev["neuron_device"]] = conn
    return links


def parse_neuron_ls(text: str, host: str) -> list[Shard]:
    """Parse ``neuron-ls --json-output`` without knowing the instance family: one shard per Neuron
    device; devices linked by ``connected_to`` form one ``nvlink`` (NeuronLink) domain and keep those
    links (:meth:`TopologySnapshot.link_hops`). Use :func:`parse_trainium_ls` /
    :func:`parse_inferentia_ls` when the instance type is known: they check the wiring against the
    family's."""
    links = _neuron_devices(text)
    return _neuron_shards(host, links, (("accelerator", "neuron"),))


def _neuron_shards(host: str, links: Mapping[int, list[int]], attrs: tuple[tuple[str, str], ...]) -> list[Shard]:
    ids = list(links)
    comp = _components(ids, [(d, c) for d, conn in links.items() for c in conn if c in links])
    return [Shard(f"{host}/nd{d}", host=host, nvlink=f"{host}/nlink-{comp[d]}", attrs=attrs,
                  links=tuple(f"{host}/nd{c}" for c in links[d] if c in links)) for d in ids]


def _family(instance_type: str, interconnect: str) -> NeuronFamily:
    fam = NEURON_FAMILIES.get(instance_type.split(".", 1)[0].strip().lower())
    valid = [k for k, f in NEURON_FAMILIES.items() if f.interconnect == interconnect]
    if fam is None or fam.interconnect != interconnect:
        raise InputError(f"instance type {instance_type!r} is not one of the {interconnect} families "
                         f"({', '.join(valid)})", column="instance_type")
    return fam


def _distance_profile(links: Mapping[int, list[int]], start: int) -> dict[int, int]:
    """How many devices lie at each hop distance from ``start`` (breadth-first)."""
    dist = {start: 0}
    frontier = [start]
    while frontier:
        nxt = []
        for d in frontier:
            for c in links.get(d, []):
                if c not in dist:
                    dist[c] = dist[d] + 1
                    nxt.append(c)
        frontier = nxt
    prof: dict[int, int] = {}
    for v in dist.values():
        prof[v] = prof.get(v, 0) + 1
    return prof


def _expected_profile(fam: NeuronFamily, n: int) -> dict[int, int]:
    """Hop-distance profile of one chip in the family's wiring of ``n`` chips (vertex-transitive)."""
    prof: dict[int, int] = {}
    if fam.interconnect == "torus" and fam.torus is not None and n == fam.torus[0] * fam.torus[1]:
        rows, cols = fam.torus
        for r in range(rows):
            for c in range(cols):
                h = min(r, rows - r) + min(c, cols - c)
                prof[h] = prof.get(h, 0) + 1
    else:  # ring (a single chip: {0: 1})
        for k in range(n):
            h = min(k, n - k)
            prof[h] = prof.get(h, 0) + 1
    return prof


def _family_links(fam: NeuronFamily, ids: list[int]) -> dict[int, list[int]]:
    """The family's wiring over ``ids`` when neuron-ls reports no links: a row-major torus or a ring in
    device order (an assumption, recorded in the shards' ``links_source`` attribute)."""
    n = len(ids)
    if n == 1:
        return {ids[0]: []}
    if fam.interconnect == "torus" and fam.torus is not None and n == fam.torus[0] * fam.torus[1]:
        rows, cols = fam.torus
        at = {(k // cols, k % cols): d for k, d in enumerate(ids)}
        return {d: sorted({at[((k // cols + dr) % rows, (k % cols + dc) % cols)]
                           for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))}) for k, d in enumerate(ids)}
    return {d: sorted({ids[(k - 1) % n], ids[(k + 1) % n]} - {d}) for k, d in enumerate(ids)}


def _parse_family(text: str, host: str, instance_type: str, interconnect: str) -> list[Shard]:
    fam = _family(instance_type, interconnect)
    links = _neuron_devices(text)
    ids = sorted(links)
    size = instance_type.strip().lower().partition(".")[2]
    per_size = dict(fam.size_devices)
    if size and size not in per_size:
        raise InputError(f"unknown {fam.name} size {instance_type!r}; known: "
                         f"{', '.join(f'{fam.name}.{sz}' for sz in per_size)}", column="instance_type")
    if size and len(ids) != per_size[size]:
        n = per_size[size]
        raise InputError(f"{fam.name}.{size} has {n} {fam.chip} device{'s' if n > 1 else ''}; neuron-ls lists "
                         f"{len(ids)}{_PARTIAL_VIEW}", column="[]")
    if len(ids) not in fam.sizes:  # a family without a size (``trn1``): any of its sizes
        raise InputError(f"{fam.name} instances have {' or '.join(map(str, fam.sizes))} {fam.chip} devices; "
                         f"neuron-ls lists {len(ids)}{_PARTIAL_VIEW}", column="[]")
    source = "neuron-ls connected_to"
    if not any(links.values()):
        links = _family_links(fam, ids)
        source = "assumed: " + ("row-major torus" if fam.interconnect == "torus" else "ring in device order")
    else:
        for i, d in enumerate(links):
            for c in links[d]:
                if c not in links or d not in links[c]:
                    raise InputError(f"device {d} lists {c} in connected_to, but {c} does not list {d} back"
                                     + ("" if c in links else f" (no device {c})"), column=f"[{i}].connected_to")
        want = _expected_profile(fam, len(ids))
        shape = (f"a {fam.torus[0]}x{fam.torus[1]} 2D torus" if fam.interconnect == "torus" and fam.torus
                 else "a ring")
        for i, d in enumerate(links):
            got = _distance_profile(links, d)
            if got != want:
                raise InputError(f"{fam.name}: {fam.chip} devices are wired as {shape} (devices per hop distance "
                                 f"{want}); device {d} sees {got}", column=f"[{i}].connected_to")
    topo = (f"torus {fam.torus[0]}x{fam.torus[1]}" if fam.interconnect == "torus" and fam.torus and len(ids) > 1
            else "ring" if len(ids) > 1 else "single")
    attrs = (("accelerator", fam.name), ("chip", fam.chip), ("interconnect", topo), ("links_source", source))
    return _neuron_shards(host, {d: links[d] for d in ids}, attrs)


def parse_trainium_ls(text: str, host: str, instance_type: str = "trn1.32xlarge") -> list[Shard]:
    """Parse ``neuron-ls --json-output`` of a Trainium instance (``trn1``, ``trn1n``, ``trn2``).

    One shard per device, all in one NeuronLink domain, each keeping its 4 torus neighbours so
    :meth:`TopologySnapshot.link_hops` gives torus distances (1 to 4 hops on a 4x4 torus). The reported
    ``connected_to`` lists must be symmetric and form the family's 4x4 torus (every device sees 4, 6,
    4, 1 devices at 1, 2, 3, 4 hops), else :class:`~deploysignal.InputError` names the device. When
    neuron-ls reports no links, a row-major torus over the device ids is assumed and the shards say so
    (``attr("links_source")``).

    Examples
    --------
    >>> import json
    >>> shards = parse_trainium_ls(json.dumps([{"neuron_device": d} for d in range(16)]), "trn-a")
    >>> snap = TopologySnapshot.from_shards(shards)
    >>> [snap.link_hops("trn-a/nd0", f"trn-a/nd{d}") for d in (1, 4, 5, 10)], shards[0].attr("interconnect")
    ([1, 1, 2, 4], 'torus 4x4')
    """
    return _parse_family(text, host, instance_type, "torus")


def parse_inferentia_ls(text: str, host: str, instance_type: str = "inf2.48xlarge") -> list[Shard]:
    """Parse ``neuron-ls --json-output`` of an Inferentia2 instance (``inf2``): devices on a ring.

    As :func:`parse_trainium_ls`, with the ring's profile (2 devices at each distance below n/2, one
    at n/2 for even n): on ``inf2.48xlarge`` (12 devices) the farthest device is 6 hops away.

    Examples
    --------
    >>> import json
    >>> shards = parse_inferentia_ls(json.dumps([{"neuron_device": d} for d in range(12)]), "inf-a")
    >>> snap = TopologySnapshot.from_shards(shards)
    >>> [snap.link_hops("inf-a/nd0", f"inf-a/nd{d}") for d in (1, 6, 11)], shards[0].attr("interconnect")
    ([1, 6, 1], 'ring')
    """
    return _parse_family(text, host, instance_type, "ring")


# --------------------------------------------------------------------------- Google TPU
#: What the number in ``acceleratorType`` counts, per generation: TensorCores per chip. v2, v3, v4 and v5p
#: name slices by TensorCores (2 per chip: ``v5p-32`` is 16 chips); v5e (``v5litepod-N``) and v6e by chips
#: (1 TensorCore per chip: ``v5litepod-16`` is 16 chips). Source: Google Cloud TPU documentation, "TPU
#: versions" (v2, v3, v4, v5p, v5e, v6e pages). ``acceleratorConfig.topology``, when present, wins.
TPU_CORES_PER_CHIP: dict[str, int] = {"v2": 2, "v3": 2, "v4": 2, "v5p": 2, "v5litepod": 1, "v6e": 1}


def parse_tpu_describe(text: str) -> list[Shard]:
    """Parse ``gcloud compute tpus tpu-vm describe --format=json``: chips spread over the worker
    hosts in ``networkEndpoints``; the slice is the ``nvlink`` (ICI) domain, the zone from ``name``."""
    doc = _load_json(text, "tpu-vm describe")
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object", column="$")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("missing 'name'", column="name")
    eps = doc.get("networkEndpoints")
    if not isinstance(eps, list) or not eps:
        raise InputError("missing or empty 'networkEndpoints'", column="networkEndpoints")
    cfg = doc.get("acceleratorConfig") or {}
    topo = cfg.get("topology") if isinstance(cfg, dict) else None
    if topo is not None:
        if not isinstance(topo, str) or not re.fullmatch(r"\d+(x\d+)+", topo):
            raise InputError(f"topology must look like 2x2x4, got {topo!r}", column="acceleratorConfig.topology")
        chips = 1
        for d in topo.split("x"):
            chips *= int(d)
    else:
        acc = doc.get("acceleratorType")
        m = re.fullmatch(r"(v\w+)-(\d+)", str(acc))
        if m is None:
            raise InputError(f"need acceleratorConfig.topology or acceleratorType like v4-32, got {acc!r}",
                             column="acceleratorType")
        gen, count = m.group(1), int(m.group(2))
        if gen not in TPU_CORES_PER_CHIP:
            raise InputError(f"unknown TPU generation {gen!r} in acceleratorType {acc!r} (known: "
                             f"{', '.join(TPU_CORES_PER_CHIP)}); give acceleratorConfig.topology", column="acceleratorType")
        per_chip = TPU_CORES_PER_CHIP[gen]
        if count % per_chip:
            raise InputError(f"{acc!r}: {count} TensorCores is not a whole number of {gen} chips ({per_chip} per chip)",
                             column="acceleratorType")
        chips = count // per_chip
    if chips % len(eps):
        raise InputError(f"{chips} chips do not split over {len(eps)} workers", column="networkEndpoints")
    per = chips // len(eps)
    parts = name.split("/")
    zone = parts[parts.index("locations") + 1] if "locations" in parts and parts[-1] != "locations" else None
    slice_name = parts[-1]
    shards = []
    for w, ep in enumerate(eps):
        if not isinstance(ep, dict) or "ipAddress" not in ep:
            raise InputError("endpoint without ipAddress", column=f"networkEndpoints[{w}].ipAddress")
        host = f"{slice_name}-w{w}"
        shards.extend(Shard(f"{host}/chip{c}", host=host, nvlink=slice_name, zone=zone) for c in range(per))
    return shards


# --------------------------------------------------------------------------- merge
_Parser = Callable[..., Any]
_KINDS: dict[str, _Parser] = {
    "scontrol": parse_scontrol_nodes,
    "sinfo": parse_sinfo,
    "k8s": parse_k8s_nodes,
    "nvidia-smi": parse_nvidia_smi_topo,
    "neuron": parse_neuron_ls,
    "trainium": parse_trainium_ls,
    "inferentia": parse_inferentia_ls,
    "tpu": parse_tpu_describe,
}


#: kinds whose output describes one host's devices without naming the host
_PER_HOST = frozenset({"nvidia-smi", "neuron", "trainium", "inferentia"})


def fetch_snapshot(
    sources: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, str]]],
    *,
    topology: str | None = None,
    host_zone: Mapping[str, str] | None = None,
) -> TopologySnapshot:
    """Build a snapshot from tool outputs, tolerant of sparse data.

    Parameters
    ----------
    sources : iterable of (kind, text) or (kind, text, options)
        ``kind`` one of ``scontrol``, ``sinfo``, ``k8s``, ``nvidia-smi``, ``neuron``, ``trainium``,
        ``inferentia``, ``tpu``; options e.g. ``{"host": "gpu-a01"}`` for per-host tools (and
        ``{"instance_type": "trn2.48xlarge"}`` for ``trainium`` / ``inferentia``). Texts are outputs the caller already fetched
        (the library does no I/O). Later sources fill levels earlier ones left empty; per-host shard
        lists (nvidia-smi, neuron, trainium, inferentia) replace the generic ``host/gpuN`` shards of that host.
    topology : str, optional
        ``scontrol show topology`` output: fills rack (leaf switch) and switch per host.
    host_zone : mapping, optional
        Extra host -> cooling zone map (e.g. from a facilities inventory).
    """
    by_host: dict[str, list[Shard]] = {}
    order: list[str] = []
    for src in sources:
        kind, text = src[0], src[1]
        opts = dict(src[2]) if len(src) > 2 else {}  # type: ignore[misc]
        if kind not in _KINDS:
            raise InputError(f"unknown source kind {kind!r}; valid: {', '.join(sorted(_KINDS))}", column="kind")
        if kind in _PER_HOST and not opts.get("host"):  # the output lists one host's devices, not the host's name
            raise InputError(f"source kind {kind!r} is one host's output: give the host it came from (options {{'host': NAME}})", column="kind")
        new = _KINDS[kind](text, **opts)
        hosts: dict[str, list[Shard]] = {}
        for s in new:
            hosts.setdefault(s.host or s.shard_id, []).append(s)
        for h, lst in hosts.items():
            if h not in by_host:
                by_host[h] = lst
                order.append(h)
                continue
            old = by_host[h]
            # fill missing levels from whichever side knows them
            fill = {lv: next((x.node(lv) for x in old + lst if x.node(lv) is not None), None) for lv in LEVELS}
            base = lst if kind in _PER_HOST else old
            by_host[h] = [replace(s, **{lv: s.node(lv) or fill[lv] for lv in LEVELS}) for s in base]
    tmap = parse_scontrol_topology(topology) if topology else {}
    zones = dict(host_zone or {})
    out: list[Shard] = []
    for h in order:
        for s in by_host[h]:
            t = tmap.get(h, {})
            out.append(replace(
                s, rack=s.rack or t.get("rack"), switch=s.switch or t.get("switch"), zone=s.zone or zones.get(h),
            ))
    if not out:
        raise InputError("no shards in any source", column="sources")
    return TopologySnapshot(tuple(out))
