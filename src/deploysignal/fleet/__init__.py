"""Fleet observer: per-shard anytime-valid evidence across a GPU cluster, with topology.

Shard e-processes on residuals against a robust fleet reference (:class:`FleetEProcess`), host/rack
averages, e-BH FDR control with a running-max adjuster (:func:`ebh`, :func:`adjust_running_max`),
a freeze hook for cluster events (:class:`ClusterEvent`), common-mode attribution (:func:`attribute`),
topology adapters (:func:`fetch_snapshot`) and baseline curation (:func:`curate_baseline`).
"""

from ._bench import bench_fleet
from ._common_mode import MIN_LOAD_SHARE, CommonMode, CommonModeEProcess, fit_common_mode, fit_common_mode_or_reason
from ._contract import Attribution, ClusterEvent, FleetObservation, NodeEvidence
from ._curation import CurationReport, curate_baseline
from ._evidence import FleetEProcess, FleetTick, contamination_margin, group_log_e, robust_residuals
from ._fdr import adjust_running_max, ebh, ebh_batch, running_max_counterexample
from ._observer import FleetObserver, ObserverSettings, attribute
from ._topology import (
    LEVELS,
    NEURON_FAMILIES,
    TPU_CORES_PER_CHIP,
    NeuronFamily,
    Shard,
    TopologySnapshot,
    expand_hostlist,
    fetch_snapshot,
    parse_inferentia_ls,
    parse_k8s_nodes,
    parse_neuron_ls,
    parse_nvidia_smi_topo,
    parse_scontrol_nodes,
    parse_scontrol_topology,
    parse_sinfo,
    parse_tpu_describe,
    parse_trainium_ls,
)

__all__ = [
    "LEVELS",
    "MIN_LOAD_SHARE",
    "NEURON_FAMILIES",
    "TPU_CORES_PER_CHIP",
    "Attribution",
    "ClusterEvent",
    "CommonMode",
    "CommonModeEProcess",
    "CurationReport",
    "FleetEProcess",
    "FleetObservation",
    "FleetObserver",
    "FleetTick",
    "NeuronFamily",
    "NodeEvidence",
    "ObserverSettings",
    "Shard",
    "TopologySnapshot",
    "adjust_running_max",
    "attribute",
    "bench_fleet",
    "contamination_margin",
    "curate_baseline",
    "ebh",
    "ebh_batch",
    "expand_hostlist",
    "fetch_snapshot",
    "fit_common_mode",
    "fit_common_mode_or_reason",
    "group_log_e",
    "parse_inferentia_ls",
    "parse_k8s_nodes",
    "parse_neuron_ls",
    "parse_nvidia_smi_topo",
    "parse_scontrol_nodes",
    "parse_scontrol_topology",
    "parse_sinfo",
    "parse_tpu_describe",
    "parse_trainium_ls",
    "robust_residuals",
    "running_max_counterexample",
]
