"""Accelerator families: Trainium (4x4 torus) and Inferentia2 (ring) hop distances, TPU chip counts per
generation, NVLink links from ``nvidia-smi topo -m``."""

import json

import pytest

from deploysignal import InputError
from deploysignal.fleet import (
    NEURON_FAMILIES,
    TPU_CORES_PER_CHIP,
    TopologySnapshot,
    fetch_snapshot,
    parse_inferentia_ls,
    parse_neuron_ls,
    parse_nvidia_smi_topo,
    parse_tpu_describe,
    parse_trainium_ls,
)

from .test_topology import read


def hops_from(snap: TopologySnapshot, host: str, src: int, n: int, prefix: str = "nd") -> list[int | None]:
    return [snap.link_hops(f"{host}/{prefix}{src}", f"{host}/{prefix}{d}") for d in range(n)]


def test_trainium_trn1_is_a_4x4_torus_with_torus_distances():
    shards = parse_trainium_ls(read("neuron_ls_trn1_32xlarge.json"), "trn-a", "trn1.32xlarge")
    snap = TopologySnapshot.from_shards(shards)
    assert len(shards) == 16 and len({s.nvlink for s in shards}) == 1  # one NeuronLink domain ...
    # ... but not one distance: device 0 at (0, 0) of the torus; wrap-around makes 3 and 12 neighbours
    assert hops_from(snap, "trn-a", 0, 16) == [0, 1, 2, 1, 1, 2, 3, 2, 2, 3, 4, 3, 1, 2, 3, 2]
    assert max(snap.link_hops(a, b) for a in snap.ids for b in snap.ids) == 4  # torus diameter 2 + 2
    assert {s.attr("interconnect") for s in shards} == {"torus 4x4"}
    assert shards[0].attr("accelerator") == "trn1" and shards[0].attr("links_source") == "neuron-ls connected_to"
    # trn2 (Trainium2, NeuronLink-v3) is the same 4x4 torus, a distinct family
    trn2 = parse_trainium_ls(read("neuron_ls_trn1_32xlarge.json"), "trn-b", "trn2.48xlarge")
    assert trn2[0].attr("accelerator") == "trn2" and trn2[0].attr("chip") == "Trainium2"


def test_trainium_distances_follow_the_reported_links_not_the_device_numbers():
    perm = [5, 9, 0, 14, 2, 11, 7, 3, 15, 1, 12, 6, 10, 4, 13, 8]  # relabel devices: the torus is the wiring
    doc = json.loads(read("neuron_ls_trn1_32xlarge.json"))
    for dev in doc:
        dev["neuron_device"] = perm[dev["neuron_device"]]
        dev["connected_to"] = [perm[c] for c in dev["connected_to"]]
    snap = TopologySnapshot.from_shards(parse_trainium_ls(json.dumps(doc), "h"))
    assert snap.link_hops(f"h/nd{perm[0]}", f"h/nd{perm[10]}") == 4
    assert snap.link_hops(f"h/nd{perm[0]}", f"h/nd{perm[12]}") == 1


def test_inferentia2_is_a_ring_with_ring_distances():
    shards = parse_inferentia_ls(read("neuron_ls_inf2_48xlarge.json"), "inf-a", "inf2.48xlarge")
    snap = TopologySnapshot.from_shards(shards)
    assert len(shards) == 12 and {s.attr("interconnect") for s in shards} == {"ring"}
    assert hops_from(snap, "inf-a", 0, 12) == [0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1]
    assert shards[0].attr("accelerator") == "inf2" and shards[0].attr("chip") == "Inferentia2"


def test_families_are_distinct_and_check_the_wiring():
    trn = read("neuron_ls_trn1_32xlarge.json")
    inf = read("neuron_ls_inf2_48xlarge.json")
    with pytest.raises(InputError, match="not one of the ring families"):
        parse_inferentia_ls(trn, "h", "trn1.32xlarge")
    with pytest.raises(InputError, match="not one of the torus families"):
        parse_trainium_ls(inf, "h", "inf2.48xlarge")
    with pytest.raises(InputError, match=r"trn1.32xlarge has 16 Trainium devices; neuron-ls lists 12"):
        parse_trainium_ls(inf, "h", "trn1.32xlarge")
    with pytest.raises(InputError, match=r"trn1 instances have 1 or 16 Trainium devices; neuron-ls lists 12"):
        parse_trainium_ls(inf, "h", "trn1")
    # a 12-device ring labelled inf2 passes; a 16-device ring labelled trn1 fails the torus check
    ring16 = json.dumps([{"neuron_device": d, "connected_to": [(d - 1) % 16, (d + 1) % 16]} for d in range(16)])
    with pytest.raises(InputError, match=r"4x4 2D torus.*device 0 sees") as exc:
        parse_trainium_ls(ring16, "h")
    assert "[0].connected_to" in str(exc.value)
    one_way = json.loads(inf)
    one_way[3]["connected_to"] = [2, 4, 9]
    with pytest.raises(InputError, match="device 3 lists 9 in connected_to, but 9 does not list 3 back"):
        parse_inferentia_ls(json.dumps(one_way), "h")


@pytest.mark.parametrize(("itype", "n", "msg"), [
    ("trn1.2xlarge", 16, r"trn1.2xlarge has 1 Trainium device; neuron-ls lists 16; inside a container"),
    ("inf2.48xlarge", 6, r"inf2.48xlarge has 12 Inferentia2 devices; neuron-ls lists 6; inside a container"),
    ("inf2.24xlarge", 12, r"inf2.24xlarge has 6 Inferentia2 devices; neuron-ls lists 12"),
    ("trn2.48xlarge", 1, r"trn2.48xlarge has 16 Trainium2 devices; neuron-ls lists 1"),
    ("trn1.8xlarge", 16, r"unknown trn1 size 'trn1.8xlarge'; known: trn1.2xlarge, trn1.32xlarge"),
    ("trn1", 4, r"trn1 instances have 1 or 16 Trainium devices; neuron-ls lists 4; .*neuron:FILE@HOST"),
])
def test_device_count_is_checked_per_instance_size(itype, n, msg):
    """A family's other size is refused (the family check let a 16-device listing pass as trn1.2xlarge), with
    the way out for a container that sees only part of the instance."""
    text = json.dumps([{"neuron_device": d} for d in range(n)])
    parse = parse_trainium_ls if itype.startswith("trn") else parse_inferentia_ls
    with pytest.raises(InputError, match=msg):
        parse(text, "h", itype)


def test_each_size_accepts_its_own_device_count():
    for fam in NEURON_FAMILIES.values():
        parse = parse_trainium_ls if fam.interconnect == "torus" else parse_inferentia_ls
        for size, n in fam.size_devices:
            shards = parse(json.dumps([{"neuron_device": d} for d in range(n)]), "h", f"{fam.name}.{size}")
            assert len(shards) == n and shards[0].attr("accelerator") == fam.name
        assert sorted({n for _, n in fam.size_devices}) == sorted(fam.sizes)


def test_no_reported_links_assumes_the_family_wiring_and_says_so():
    shards = parse_inferentia_ls(json.dumps([{"neuron_device": d} for d in range(6)]), "h", "inf2.24xlarge")
    snap = TopologySnapshot.from_shards(shards)
    assert hops_from(snap, "h", 0, 6) == [0, 1, 2, 3, 2, 1]
    assert shards[0].attr("links_source") == "assumed: ring in device order"
    single = parse_trainium_ls('[{"neuron_device": 0}]', "h", "trn1.2xlarge")
    assert single[0].attr("interconnect") == "single" and single[0].links == ()


def test_generic_neuron_adapter_keeps_links():
    snap = TopologySnapshot.from_shards(parse_neuron_ls(read("neuron_ls.json"), "trn1-7"))
    assert snap.link_hops("trn1-7/nd0", "trn1-7/nd2") == 2 and snap.link_hops("trn1-7/nd0", "trn1-7/nd3") == 1


def test_fetch_snapshot_keeps_links_and_families_through_the_merge():
    snap = fetch_snapshot([("trainium", read("neuron_ls_trn1_32xlarge.json"), {"host": "trn-a", "instance_type": "trn1n.32xlarge"}),
                           ("inferentia", read("neuron_ls_inf2_48xlarge.json"), {"host": "inf-a"})],
                          host_zone={"trn-a": "cz1"})
    assert len(snap) == 28 and snap.shards[0].zone == "cz1" and snap.shards[0].attr("accelerator") == "trn1n"
    assert snap.link_hops("trn-a/nd0", "trn-a/nd10") == 4 and snap.link_hops("inf-a/nd0", "inf-a/nd6") == 6
    assert snap.link_hops("trn-a/nd0", "inf-a/nd0") is None  # no NeuronLink between instances


def test_nvidia_smi_links_are_the_nvlink_peers():
    snap = TopologySnapshot.from_shards(parse_nvidia_smi_topo(read("nvidia_smi_topo_m.txt"), "g"))
    assert snap.link_hops("g/gpu0", "g/gpu1") == 1 and snap.link_hops("g/gpu0", "g/gpu2") is None


def _tpu(acc: str, workers: int, topology: str | None = None) -> str:
    doc = {"name": f"projects/p/locations/us-east5-a/nodes/{acc}", "acceleratorType": acc,
           "networkEndpoints": [{"ipAddress": f"10.0.0.{w}"} for w in range(workers)]}
    if topology:
        doc["acceleratorConfig"] = {"topology": topology}
    return json.dumps(doc)


@pytest.mark.parametrize(("acc", "workers", "chips"), [
    ("v2-8", 1, 4),          # TensorCores: 2 per chip
    ("v3-32", 4, 16),
    ("v4-32", 4, 16),
    ("v5p-32", 4, 16),       # was 32: v5p was read as chips
    ("v5p-8", 1, 4),
    ("v5litepod-16", 4, 16),  # v5e names chips: 1 TensorCore per chip
    ("v6e-8", 1, 8),
])
def test_tpu_chip_count_per_generation_without_accelerator_config(acc, workers, chips):
    shards = parse_tpu_describe(_tpu(acc, workers))
    assert len(shards) == chips and len({s.host for s in shards}) == workers
    assert acc.split("-")[0] in TPU_CORES_PER_CHIP


def test_tpu_topology_wins_and_unknown_generations_are_refused():
    assert len(parse_tpu_describe(_tpu("v5p-32", 4, "2x2x4"))) == 16
    with pytest.raises(InputError, match="unknown TPU generation 'v9x'.*acceleratorType"):
        parse_tpu_describe(_tpu("v9x-16", 2))
    with pytest.raises(InputError, match="not a whole number of v4 chips"):
        parse_tpu_describe(_tpu("v4-9", 1))
