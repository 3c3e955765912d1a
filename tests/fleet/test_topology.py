from functools import partial
from pathlib import Path

import pytest

from deploysignal import InputError
from deploysignal.fleet import (
    TopologySnapshot,
    expand_hostlist,
    fetch_snapshot,
    parse_k8s_nodes,
    parse_neuron_ls,
    parse_nvidia_smi_topo,
    parse_scontrol_nodes,
    parse_scontrol_topology,
    parse_sinfo,
    parse_tpu_describe,
)

FIX = Path(__file__).parent / "fixtures"


def read(name: str) -> str:
    return (FIX / name).read_text()


def test_scontrol_nodes_fixture():
    shards = parse_scontrol_nodes(read("scontrol_show_node.txt"))
    assert len(shards) == 8 + 8 + 8 + 1  # three 8-GPU nodes + a GPU-less login node
    a01 = [s for s in shards if s.host == "gpu-a01"]
    assert [s.shard_id for s in a01][:2] == ["gpu-a01/gpu0", "gpu-a01/gpu1"]
    assert {(s.rack, s.zone) for s in a01} == {("r01", "cz1")}
    assert shards[-1].shard_id == "login01" and shards[-1].rack is None


def test_scontrol_topology_fixture():
    t = parse_scontrol_topology(read("scontrol_show_topology.txt"))
    assert t["gpu-a02"] == {"rack": "leaf-r01", "switch": "spine0"}
    assert t["gpu-b01"] == {"rack": "leaf-r02", "switch": "spine0"}


def test_sinfo_fixture_dedups_partitions():
    shards = parse_sinfo(read("sinfo_N.txt"))
    assert len(shards) == 25
    assert sum(s.host == "gpu-a01" for s in shards) == 8


def test_k8s_fixture():
    shards = parse_k8s_nodes(read("kubectl_get_nodes.json"))
    assert len(shards) == 17
    gke = shards[0]
    assert (gke.rack, gke.switch, gke.zone) == ("sb-07", "b-31f2", "us-central1-c")
    aws = [s for s in shards if s.host == "ip-10-0-12-34.ec2.internal"]
    assert len(aws) == 8 and aws[0].rack == "rack-17" and aws[0].switch == "nn-8f2e1c"


def test_nvidia_smi_fixture_nvlink_domains():
    shards = parse_nvidia_smi_topo(read("nvidia_smi_topo_m.txt"), "gpu-a01")
    assert [s.shard_id for s in shards] == [f"gpu-a01/gpu{i}" for i in range(4)]
    assert shards[0].nvlink == shards[1].nvlink != shards[2].nvlink == shards[3].nvlink


def test_neuron_fixture_ring_is_one_domain():
    shards = parse_neuron_ls(read("neuron_ls.json"), "trn1-7")
    assert len(shards) == 4 and len({s.nvlink for s in shards}) == 1


def test_tpu_fixture():
    shards = parse_tpu_describe(read("tpu_vm_describe.json"))
    assert len(shards) == 16 and len({s.host for s in shards}) == 4
    assert shards[0].zone == "us-central2-b" and shards[0].nvlink == "serve-v4-32"


def test_fetch_snapshot_merges_and_tolerates_sparse():
    snap = fetch_snapshot(
        [("scontrol", read("scontrol_show_node.txt")),
         ("nvidia-smi", read("nvidia_smi_topo_m.txt"), {"host": "gpu-a01"})],
        topology=read("scontrol_show_topology.txt"),
    )
    # gpu-a01 replaced by its 4 nvidia-smi GPUs, which inherit rack/zone from scontrol
    a01 = [s for s in snap.shards if s.host == "gpu-a01"]
    assert len(a01) == 4 and a01[0].rack == "r01" and a01[0].zone == "cz1" and a01[0].switch == "spine0"
    login = snap.shards[snap.index["login01"]]
    assert login.rack is None and login.switch is None  # sparse: unknown levels stay None
    assert snap.hops("gpu-a01/gpu0", "gpu-a01/gpu1") == 1
    assert snap.hops("gpu-a01/gpu0", "login01") is None


def test_hostlist():
    assert expand_hostlist("n[1-3]x,m7") == ["n1x", "n2x", "n3x", "m7"]
    with pytest.raises(InputError, match="unbalanced"):
        expand_hostlist("n[1-3")
    with pytest.raises(InputError, match="bad range"):
        expand_hostlist("n[3-1]")


@pytest.mark.parametrize(
    ("parser", "text", "where"),
    [
        (parse_scontrol_nodes, "Arch=x86_64\n", "row 1, column 'NodeName'"),
        (parse_scontrol_nodes, "NodeName=a Gres=gpu:a100:eight\n", "row 1, column 'Gres'"),
        (parse_scontrol_nodes, "NodeName=a\n   oops\n", "row 2"),
        (parse_scontrol_topology, "SwitchName=s0 Level=x Nodes=a\n", "row 1, column 'Level'"),
        (parse_scontrol_topology, "SwitchName=s0 Level=0 Nodes=a[1-\n", "row 1, column 'Nodes'"),
        (parse_sinfo, "NODELIST PARTITION GRES STATE\ngpu-a01 gpu\n", "row 2"),
        (parse_k8s_nodes, '{"items": [{"metadata": {}}]}', "items[0].metadata.name"),
        (parse_k8s_nodes, '{"items": [\n{"metadata": {"name": "a"},}]}', "row 2"),
        (parse_k8s_nodes,
         '{"items": [{"metadata": {"name": "a"}, "status": {"allocatable": {"nvidia.com/gpu": "x"}}}]}',
         "items[0].status.allocatable.nvidia.com/gpu"),
        (partial(parse_neuron_ls, host="h"), '[{"neuron_device": 0, "connected_to": "1"}]', "[0].connected_to"),
        (partial(parse_neuron_ls, host="h"), '{"neuron_device": 0}', "[]"),
        (parse_tpu_describe, '{"name": "x", "networkEndpoints": [{"ipAddress": "1"}], '
                             '"acceleratorConfig": {"topology": "2by2"}}', "acceleratorConfig.topology"),
        (parse_tpu_describe, '{"name": "x"}', "networkEndpoints"),
    ],
)
def test_malformed_output_names_line_or_field(parser, text, where):
    with pytest.raises(InputError) as exc:
        parser(text)
    assert where in str(exc.value)


def test_nvidia_smi_malformed():
    good = read("nvidia_smi_topo_m.txt")
    with pytest.raises(InputError, match="row 3, column 'GPU2'"):
        parse_nvidia_smi_topo(good.replace("GPU1\tNV12\t X \tSYS", "GPU1\tNV12\t X \tQQQ"), "h")
    with pytest.raises(InputError, match="GPU0"):
        parse_nvidia_smi_topo("garbage\n", "h")
    truncated = "\n".join(ln for ln in good.splitlines() if not ln.startswith("GPU3"))
    with pytest.raises(InputError, match="no row for GPU3"):
        parse_nvidia_smi_topo(truncated, "h")


def test_fetch_snapshot_unknown_kind_and_duplicates():
    with pytest.raises(InputError, match="unknown source kind"):
        fetch_snapshot([("lsf", "")])
    from deploysignal.fleet import Shard

    with pytest.raises(InputError, match="duplicate shard id"):
        TopologySnapshot((Shard("a"), Shard("a")))
