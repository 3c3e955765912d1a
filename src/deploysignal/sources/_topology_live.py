"""Live topology fetch: run the cluster tools and parse what they print.

The parsers of :mod:`deploysignal.fleet` read captured text and do no I/O; this adapter runs the tool
itself (``nvidia-smi topo -m``, ``kubectl get nodes -o json``, ``neuron-ls --json-output``,
``gcloud compute tpus tpu-vm describe``, ``scontrol show node``) with a timeout and hands the output
to the parser. Every way a tool can fail ends in :class:`~deploysignal.InputError` with a message that
says which: the executable is not on ``PATH``, it exited non-zero (its last stderr line is quoted), it
did not finish within the timeout (its whole process group is killed, so a tool that forked does not
linger; a descendant that started its own session cannot be reached that way, but the call still returns
within the timeout plus :data:`KILL_GRACE` seconds: the pipes it holds are closed), its output is not
UTF-8, or its output does not parse (the parser's line and field).

``deploysignal fleet topology --from TOOL`` is the command-line entry point.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._exceptions import InputError
from ..fleet import NEURON_FAMILIES, TopologySnapshot, fetch_snapshot

__all__ = ["KILL_GRACE", "LIVE_TOOLS", "MAX_TIMEOUT", "LiveTool", "fetch_topology", "run_tool", "tool_kind"]


#: Largest ``timeout`` accepted (seconds): one hour. A topology listing takes seconds; larger values
#: (``inf``, ``1e300``) cannot be passed to the OS wait calls and are refused before the tool starts.
MAX_TIMEOUT = 3600.0
#: Seconds granted after the timeout's kill to collect the output already written; then the pipes are
#: closed whatever still holds them (a descendant in its own session), so the call never waits unbounded.
KILL_GRACE = 1.0


@dataclass(frozen=True)
class LiveTool:
    """One tool: the command it runs and the :func:`~deploysignal.fleet.fetch_snapshot` kind that
    parses its output. ``per_host`` tools describe the devices of the machine they run on."""

    name: str
    argv: tuple[str, ...]
    kind: str
    per_host: bool


#: The tools ``fleet topology --from`` can run.
LIVE_TOOLS: dict[str, LiveTool] = {
    "nvidia-smi": LiveTool("nvidia-smi", ("nvidia-smi", "topo", "-m"), "nvidia-smi", True),
    "kubectl": LiveTool("kubectl", ("kubectl", "get", "nodes", "-o", "json"), "k8s", False),
    "neuron-ls": LiveTool("neuron-ls", ("neuron-ls", "--json-output"), "neuron", True),
    "gcloud-tpu": LiveTool("gcloud-tpu", ("gcloud", "compute", "tpus", "tpu-vm", "describe"), "tpu", False),
    "scontrol": LiveTool("scontrol", ("scontrol", "show", "node"), "scontrol", False),
}


def run_tool(argv: Sequence[str], *, timeout: float) -> str:
    """Run ``argv`` and return its standard output (UTF-8).

    Raises :class:`~deploysignal.InputError` when ``timeout`` is not a number of seconds in
    (0, :data:`MAX_TIMEOUT`] (before anything runs), the executable is missing, exits non-zero, runs
    past ``timeout`` seconds or prints bytes that are not UTF-8. Past the timeout the tool's process
    group is killed; output is then collected for at most :data:`KILL_GRACE` seconds, after which the
    pipes are closed, so the call returns within ``timeout + KILL_GRACE`` seconds (plus scheduling)
    even when a descendant left the group (``setsid``) and still holds the pipes. Such a descendant
    is not killed (its process id is unknown here); the error says so.
    """
    _check_timeout(timeout)
    cmd = shlex.join(argv)
    exe = shutil.which(argv[0])
    if exe is None:
        raise InputError(f"`{cmd}`: executable {argv[0]!r} not found on PATH (install it, or capture its output "
                         "elsewhere and pass the file)")
    try:
        proc = subprocess.Popen([exe, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise InputError(f"`{cmd}`: cannot start it ({exc.strerror})") from None
    try:
        out, errb = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the tool's own session: its children go too
        except ProcessLookupError:  # pragma: no cover - ended between the timeout and the kill
            pass
        try:
            proc.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:  # a descendant in its own session holds the pipes: drop them
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            try:
                proc.wait(timeout=KILL_GRACE)  # the tool itself was in the killed group: reaped at once
            except subprocess.TimeoutExpired:  # pragma: no cover - a process the kernel cannot stop yet
                pass
            raise InputError(f"`{cmd}` did not finish within {timeout:g} s (stopped; a process it started in its own "
                             "session still held its output and was left running)") from None
        raise InputError(f"`{cmd}` did not finish within {timeout:g} s (stopped)") from None
    if proc.returncode != 0:
        last = next((ln.strip() for ln in reversed(errb.decode("utf-8", "replace").splitlines()) if ln.strip()), "")
        raise InputError(f"`{cmd}` exited with status {proc.returncode}" + (f": {last}" if last else " (no message)"))
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = out[:exc.start].count(b"\n") + 1
        raise InputError(f"`{cmd}` output, line {line}: not UTF-8 text") from None


def _check_timeout(timeout: float) -> None:
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise InputError(f"timeout must be a positive, finite number of seconds up to {MAX_TIMEOUT:g}, got {timeout}",
                         column="timeout")


def fetch_topology(
    tool: str,
    *,
    timeout: float = 30.0,
    host: str | None = None,
    instance_type: str | None = None,
    tpu: str | None = None,
    zone: str | None = None,
    selector: str | None = None,
    text: str | None = None,
) -> tuple[TopologySnapshot, str]:
    """Run ``tool`` (a key of :data:`LIVE_TOOLS`) and parse its output into a snapshot.

    Parameters
    ----------
    tool : str
        ``nvidia-smi``, ``kubectl``, ``neuron-ls``, ``gcloud-tpu`` or ``scontrol``.
    timeout : float
        Seconds the tool may run, in (0, :data:`MAX_TIMEOUT`]; checked before anything runs.
    host : str, optional
        For per-host tools (nvidia-smi, neuron-ls): the host the devices belong to; default this
        machine's host name (the tool runs here).
    instance_type : str, optional
        For neuron-ls: the EC2 instance type (``trn1.32xlarge``, ``trn2.48xlarge``, ``inf2.48xlarge``):
        selects the Trainium (torus) or Inferentia2 (ring) adapter, which checks the wiring. Without
        it the generic Neuron adapter keeps the reported links unchecked.
    tpu, zone : str, optional
        For gcloud-tpu: the TPU VM name and its zone (both required).
    selector : str, optional
        For kubectl: a label selector (``-l``).
    text : str, optional
        Parse this captured output instead of running the tool (same errors for bad output).

    An option given for a tool it does not apply to (``host`` for kubectl, ``selector`` for
    nvidia-smi, ...) raises :class:`~deploysignal.InputError` naming it, instead of being ignored.

    Returns
    -------
    (TopologySnapshot, str)
        The snapshot and the raw output (to save and pass to ``fleet observe --topology`` later).
    """
    if tool not in LIVE_TOOLS:
        raise InputError(f"unknown tool {tool!r}; valid: {', '.join(LIVE_TOOLS)}", column="from")
    spec = LIVE_TOOLS[tool]
    _check_timeout(timeout)
    given = {"host": host, "tpu": tpu, "zone": zone, "selector": selector}
    applies = {"host": spec.per_host, "tpu": tool == "gcloud-tpu", "zone": tool == "gcloud-tpu",
               "selector": tool == "kubectl"}
    stray = [k for k, v in given.items() if v is not None and not applies[k]]
    if stray:
        where = {"host": "nvidia-smi and neuron-ls", "tpu": "gcloud-tpu", "zone": "gcloud-tpu", "selector": "kubectl"}
        raise InputError(f"--{stray[0]} applies to {where[stray[0]]} only, not {tool}", column=stray[0])
    argv = list(spec.argv)
    opts: dict[str, str] = {}
    kind = tool_kind(tool, instance_type)
    if spec.per_host:
        opts["host"] = host or socket.gethostname()
    if instance_type:
        opts["instance_type"] = instance_type
    if tool == "gcloud-tpu":
        if not (tpu and zone):
            raise InputError("gcloud-tpu needs the TPU VM name and its zone (--tpu NAME --zone ZONE)", column="tpu")
        argv += [tpu, "--zone", zone, "--format=json"]
    if tool == "kubectl" and selector:
        argv += ["-l", selector]
    raw = text if text is not None else run_tool(argv, timeout=timeout)
    return _parse(raw, kind, opts, shlex.join(argv)), raw


def tool_kind(tool: str, instance_type: str | None = None) -> str:
    """The :func:`~deploysignal.fleet.fetch_snapshot` kind (and ``fleet observe --topology`` KIND) that
    parses ``tool``'s output: for neuron-ls with an instance type, ``trainium`` or ``inferentia``."""
    if tool not in LIVE_TOOLS:
        raise InputError(f"unknown tool {tool!r}; valid: {', '.join(LIVE_TOOLS)}", column="from")
    if not instance_type:
        return LIVE_TOOLS[tool].kind
    if tool != "neuron-ls":
        raise InputError(f"--instance-type applies to neuron-ls only, not {tool}", column="instance_type")
    fam = NEURON_FAMILIES.get(instance_type.split(".", 1)[0].strip().lower())
    if fam is None:
        raise InputError(f"unknown Neuron instance type {instance_type!r}; known families: "
                         f"{', '.join(NEURON_FAMILIES)}", column="instance_type")
    return "trainium" if fam.interconnect == "torus" else "inferentia"


def _parse(raw: str, kind: str, opts: Mapping[str, str], cmd: str) -> TopologySnapshot:
    try:
        return fetch_snapshot([(kind, raw, opts)])
    except InputError as exc:
        where = f", line {exc.row}" if exc.row is not None else ""
        raise InputError(f"`{cmd}` output{where}: {exc.message}", column=exc.column) from None
