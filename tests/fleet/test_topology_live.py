"""Live topology fetch through fake executables on PATH: output parsed, arguments passed, and every
failure (missing, non-zero exit, hang past the timeout, garbage, not UTF-8) a clear error."""

import contextlib
import json
import os
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploysignal import InputError
from deploysignal.cli._fleet import app
from deploysignal.sources import fetch_topology, run_tool

from .test_topology import FIX


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Write a fake tool: a shell script whose arguments are logged to <name>.args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # only the fakes: the real tools, if any, are not found

    def make(name: str, body: str) -> Path:
        p = bin_dir / name
        p.write_text(f'#!/bin/sh\necho "$@" > "{bin_dir}/{name}.args"\n{body}\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
        return bin_dir / f"{name}.args"

    return make


def test_nvidia_smi_live(fake):
    args = fake("nvidia-smi", f"/bin/cat {FIX / 'nvidia_smi_topo_m.txt'}")
    snap, raw = fetch_topology("nvidia-smi", host="gpu-a01", timeout=10)
    assert args.read_text().split() == ["topo", "-m"]
    assert snap.ids == tuple(f"gpu-a01/gpu{i}" for i in range(4)) and raw == (FIX / "nvidia_smi_topo_m.txt").read_text()
    assert snap.link_hops("gpu-a01/gpu0", "gpu-a01/gpu1") == 1 and snap.link_hops("gpu-a01/gpu0", "gpu-a01/gpu3") is None


def test_kubectl_live_with_selector(fake):
    args = fake("kubectl", f"/bin/cat {FIX / 'kubectl_get_nodes.json'}")
    snap, _ = fetch_topology("kubectl", selector="pool=gpu", timeout=10)
    assert args.read_text().split() == ["get", "nodes", "-o", "json", "-l", "pool=gpu"]
    assert len(snap) == 17 and snap.shards[0].rack == "sb-07"


def test_neuron_ls_live_trainium_torus_and_inferentia_ring(fake):
    args = fake("neuron-ls", f"/bin/cat {FIX / 'neuron_ls_trn1_32xlarge.json'}")
    snap, _ = fetch_topology("neuron-ls", host="trn-a", instance_type="trn1.32xlarge", timeout=10)
    assert args.read_text().split() == ["--json-output"]
    assert snap.link_hops("trn-a/nd0", "trn-a/nd10") == 4 and snap.shards[0].attr("accelerator") == "trn1"
    with pytest.raises(InputError, match=r"`neuron-ls --json-output` output: trn2.48xlarge has 16 Trainium2 devices; neuron-ls lists 12"):
        fake("neuron-ls", f"/bin/cat {FIX / 'neuron_ls_inf2_48xlarge.json'}")
        fetch_topology("neuron-ls", host="x", instance_type="trn2.48xlarge", timeout=10)  # 12 devices: not a trn2
    snap, _ = fetch_topology("neuron-ls", host="inf-a", instance_type="inf2.48xlarge", timeout=10)
    assert snap.link_hops("inf-a/nd0", "inf-a/nd6") == 6


def test_gcloud_tpu_live_counts_v5p_chips(fake):
    doc = {"name": "projects/p/locations/us-east5-a/nodes/serve", "acceleratorType": "v5p-32",
           "networkEndpoints": [{"ipAddress": f"10.0.0.{w}"} for w in range(4)]}
    args = fake("gcloud", f"/bin/cat <<'EOF'\n{json.dumps(doc)}\nEOF")
    snap, _ = fetch_topology("gcloud-tpu", tpu="serve", zone="us-east5-a", timeout=10)
    assert args.read_text().split() == ["compute", "tpus", "tpu-vm", "describe", "serve", "--zone", "us-east5-a", "--format=json"]
    assert len(snap) == 16  # v5p-32 names TensorCores: 16 chips
    with pytest.raises(InputError, match="needs the TPU VM name and its zone"):
        fetch_topology("gcloud-tpu", timeout=10)


def test_missing_executable(fake):
    with pytest.raises(InputError, match=r"`nvidia-smi topo -m`: executable 'nvidia-smi' not found on PATH"):
        fetch_topology("nvidia-smi", timeout=10)


def test_non_zero_exit_quotes_the_last_stderr_line(fake):
    fake("nvidia-smi", "echo 'starting' >&2\necho \"NVIDIA-SMI has failed because it couldn't communicate with the "
                       "NVIDIA driver.\" >&2\nexit 9")
    with pytest.raises(InputError, match=r"exited with status 9: NVIDIA-SMI has failed because it couldn't communicate"):
        fetch_topology("nvidia-smi", timeout=10)


def test_hang_past_the_timeout_is_stopped_with_its_children(fake, tmp_path):
    pid_file = tmp_path / "child.pid"
    fake("kubectl", f"/bin/sleep 60 &\necho $! > {pid_file}\nwait")  # the tool forks a child that would outlive it
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"`kubectl get nodes -o json` did not finish within 0.5 s \(stopped\)"):
        fetch_topology("kubectl", timeout=0.5)
    assert time.monotonic() - t0 < 10
    child = int(pid_file.read_text())
    for _ in range(50):  # the process group was killed: the child is gone (or a zombie awaiting its reaper)
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail(f"child {child} of the timed-out tool still runs")


def test_timeout_bounds_the_call_when_a_descendant_left_the_group(fake, tmp_path):
    """A daemon started with ``setsid`` is outside the killed process group and holds the pipes: the
    call still returns within the timeout plus the kill grace (1 s), with an error that says so."""
    pid_file = tmp_path / "daemon.pid"  # PATH holds only the fakes: setsid by its path
    fake("kubectl", f"/usr/bin/setsid /bin/sleep 30 &\necho $! > {pid_file}\n/bin/sleep 30")
    t0 = time.monotonic()
    try:
        with pytest.raises(InputError, match=r"did not finish within 0.5 s \(stopped; a process it started in its "
                                             r"own session still held its output and was left running\)"):
            fetch_topology("kubectl", timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + 1.0 + 2.0  # timeout + KILL_GRACE + scheduling slack (was 30 s)
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), 9)  # the daemon the error says was left running


@pytest.mark.parametrize("value", ["inf", "1e300", "-1", "nan", "0", "3601"])
def test_cli_refuses_a_timeout_that_is_not_finite_and_sane_before_running(fake, tmp_path, value):
    """``--timeout inf`` crashed in the OS wait call with the tool already started; now exit 2 first."""
    ran = tmp_path / "ran"
    fake("kubectl", f"touch {ran}\necho '{{\"items\": []}}'")
    r = CliRunner().invoke(app, ["topology", "--from", "kubectl", "--timeout", value])
    assert r.exit_code == 2 and "timeout must be a positive, finite number of seconds up to 3600" in r.output, r.output
    assert not ran.exists()  # refused before the tool started
    with pytest.raises(InputError, match="finite number of seconds"):
        run_tool(["true"], timeout=float(value))


@pytest.mark.parametrize(("args", "opt"), [
    (["--from", "kubectl", "--host", "foo"], "--host applies to nvidia-smi and neuron-ls only, not kubectl"),
    (["--from", "kubectl", "--tpu", "x"], "--tpu applies to gcloud-tpu only, not kubectl"),
    (["--from", "scontrol", "--zone", "z"], "--zone applies to gcloud-tpu only, not scontrol"),
    (["--from", "nvidia-smi", "--selector", "a=b"], "--selector applies to kubectl only, not nvidia-smi"),
])
def test_cli_refuses_options_that_do_not_apply_to_the_tool(fake, args, opt):
    fake("kubectl", "echo '{\"items\": []}'")
    r = CliRunner().invoke(app, ["topology", *args])
    assert r.exit_code == 2 and opt in r.output, r.output


def test_cli_save_spec_round_trips_with_the_instance_type_and_in_json(fake, tmp_path):
    """The printed spec keeps =INSTANCE_TYPE (a trn2 capture read back as the trn1 default was relabelled),
    ``--json --save`` carries it in the JSON, and a path with '@' is refused before the tool runs."""
    fake("neuron-ls", f"/bin/cat {FIX / 'neuron_ls_trn1_32xlarge.json'}")
    saved = tmp_path / "trn.json"
    runner = CliRunner()
    r = runner.invoke(app, ["topology", "--from", "neuron-ls", "--instance-type", "trn2.48xlarge", "--host", "trn-a",
                            "--save", str(saved), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    spec = f"trainium=trn2.48xlarge:{saved}@trn-a"
    assert doc["saved"] == {"file": str(saved), "topology_spec": spec} and f"--topology {spec}" in r.stderr
    tel = tmp_path / "tel.csv"
    tel.write_text("tick,shard,errors\n" + "".join(f"{t},trn-a/nd{d},{(t * 7 + d * 3) % 5 / 10}\n" for t in range(5) for d in range(16)))
    r = runner.invoke(app, ["observe", str(tel), "--topology", spec, "--jsonl"])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "a@b"
    bad.mkdir()
    r = runner.invoke(app, ["topology", "--from", "neuron-ls", "--host", "trn-a", "--save", str(bad / "trn.json")])
    assert r.exit_code == 2 and "contains '@'" in r.output and not (bad / "trn.json").exists()


def test_cli_text_says_when_some_device_pairs_are_not_linked(fake):
    fake("nvidia-smi", f"/bin/cat {FIX / 'nvidia_smi_topo_m.txt'}")
    r = CliRunner().invoke(app, ["topology", "--from", "nvidia-smi", "--host", "vm"])
    assert r.exit_code == 0 and "hop distances 1..1 between linked pairs, some pairs not linked" in r.output, r.output


@pytest.mark.parametrize(("tool", "script", "where"), [
    ("nvidia-smi", "printf 'GPU stats unavailable\\n\\tno matrix\\n'", r"`nvidia-smi topo -m` output, line 1: no header row starting with GPU0"),
    ("kubectl", "printf '{\"items\": [\\n{\"metadata\": {\"name\": \"a\"},}]}'", r"`kubectl get nodes -o json` output, line 2: .*invalid JSON"),
    ("neuron-ls", "echo 'neuron-ls: no devices'", r"`neuron-ls --json-output` output, line 1: .*invalid JSON"),
    ("nvidia-smi", "printf 'GPU0\\tGPU1\\nGPU0\\t X \\tNV4\\nGPU1\\tNV4\\t ?? \\n'", r"output, line 3: unknown link type '\?\?'"),
    ("nvidia-smi", "printf 'GPU0\\n\\377\\n'", r"`nvidia-smi topo -m` output, line 2: not UTF-8 text"),
])
def test_garbage_output_names_the_line(fake, tool, script, where):
    fake(tool, script)
    with pytest.raises(InputError, match=where):
        fetch_topology(tool, host="h" if tool != "kubectl" else None, timeout=10)


def test_run_tool_rejects_a_non_positive_timeout():
    with pytest.raises(InputError, match="timeout must be a positive, finite number"):
        run_tool(["true"], timeout=0)


def test_cli_fleet_topology(fake, tmp_path):
    fake("neuron-ls", f"/bin/cat {FIX / 'neuron_ls_trn1_32xlarge.json'}")
    runner = CliRunner()
    r = runner.invoke(app, ["topology", "--from", "neuron-ls", "--instance-type", "trn1.32xlarge", "--host", "trn-a", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    hops = doc["link_hops"]["trn-a"]
    assert hops["diameter"] == 4 and hops["interconnect"] == "torus 4x4" and hops["matrix"][0][10] == 4
    saved = tmp_path / "trn.json"
    r = runner.invoke(app, ["topology", "--from", "neuron-ls", "--instance-type", "trn1.32xlarge", "--host", "trn-a",
                            "--save", str(saved)])
    assert r.exit_code == 0 and "trn-a: torus 4x4, 16 devices, hop distances 1..4" in r.output, r.output
    assert saved.read_text() == (FIX / "neuron_ls_trn1_32xlarge.json").read_text()
    assert f"--topology trainium=trn1.32xlarge:{saved}@trn-a" in r.output
    tel = tmp_path / "tel.csv"  # the saved output feeds observe (16 torus devices; healthy telemetry, 5 ticks)
    tel.write_text("tick,shard,errors\n" + "".join(f"{t},trn-a/nd{d},{(t * 7 + d * 3) % 5 / 10}\n" for t in range(5) for d in range(16)))
    r = runner.invoke(app, ["observe", str(tel), "--topology", f"trainium=trn1.32xlarge:{saved}@trn-a"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["observe", str(tel), "--topology", f"trainium=inf2.48xlarge:{saved}@trn-a"])
    assert r.exit_code == 2 and "not one of the torus families" in r.output
    fake("kubectl", "/bin/sleep 30")
    r = runner.invoke(app, ["topology", "--from", "kubectl", "--timeout", "0.3"])
    assert r.exit_code == 2 and "did not finish within 0.3 s" in r.output
    r = runner.invoke(app, ["topology", "--from", "lsf"])
    assert r.exit_code == 2 and "unknown tool 'lsf'" in r.output


def test_neuron_ls_shapes_of_real_hosts(fake):
    """A single-device trn1.2xlarge prints ``connected_to: null`` and a string ``numa_node``; a host whose
    driver is not loaded prints nothing on stdout, one logfmt line on stderr and exits 1."""
    one = ('[{"neuron_device": 0, "bdf": "0000:00:1e.0", "cpu_affinity": "0-7", "numa_node": "-1", '
           '"connected_to": null, "nc_count": 2, "memory_size": 34359738368, "neuroncore_ids": [0, 1], '
           '"neuron_processes": []}]')
    fake("neuron-ls", f"/bin/cat <<'EOF'\n{one}\nEOF")
    snap, _ = fetch_topology("neuron-ls", host="t", instance_type="trn1.2xlarge", timeout=10)
    assert snap.ids == ("t/nd0",) and snap.shards[0].attr("interconnect") == "single"
    fake("neuron-ls", "echo 'time=\"2026-09-12T02:42:06Z\" level=fatal msg=\"Failed to load MLA system information\" "
                      "error=\"failed to discover Neuron devices\"' >&2\nexit 1")
    with pytest.raises(InputError, match=r"exited with status 1: .*failed to discover Neuron devices"):
        fetch_topology("neuron-ls", host="t", timeout=10)
