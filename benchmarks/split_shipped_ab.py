"""A/B of the shipped split tick between two source trees (the figures in docs/split.md, "The shipped path").

Times, per tick, what ``gate --split --audit`` runs (``SplitGate.update(data, t)``, with
``evidence=True`` in a tree whose ``update`` takes it, as the CLI calls it there; the tick's records;
their chained canonical JSON lines) and what the service runs after parsing (update and records), on
the data of ``deploysignal bench --split`` (12 continuous metrics x 20 buckets x 2 arms, 5,000 units a
tick, 5% canary) with ``canary_share`` 0.05 so that the sample-ratio record is included. The same
script times either tree; CPU time per tick
(``time.process_time``), minimum of 3 passes; it prints the final chain head, which must be the same
for both trees (the same bytes).

Run it alternately against the two trees, back to back (the machine is shared):
    PYTHONPATH=/path/to/main/src python benchmarks/split_shipped_ab.py 1000
    PYTHONPATH=src python benchmarks/split_shipped_ab.py 1000
"""

from __future__ import annotations

import inspect
import sys
import time

import numpy as np

from deploysignal.audit._chain import GENESIS, chain_records
from deploysignal.split import MetricSpec, SplitGate, SplitSettings, SplitTick, ticks_to_data


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rng = np.random.default_rng(0)
    edges = tuple(float(2.0**i) for i in range(19))
    specs = [MetricSpec(f"m{j}", "continuous", "up", edges) for j in range(12)]
    ticks = []
    for t in range(n):
        arms = {arm: {"units": u, "events": {}, "buckets": {s.name: [int(x) for x in c] for s, c in zip(specs, rng.multinomial(u, np.full(20, 0.05), size=12))}}
                for arm, u in (("canary", 250), ("stable", 4750))}
        ticks.append(SplitTick.from_dict({"timestamp": 1.8e9 + 60.0 * t, "arms": arms, "tier": None}))
    data = ticks_to_data(ticks, specs)
    settings = SplitSettings(window=10**9, max_extensions=0, canary_share=0.05)
    shipped_call = {"evidence": True} if "evidence" in inspect.signature(SplitGate.update).parameters else {}  # the shipped call of this tree

    def run(lines: bool) -> tuple[float, str]:
        g, head = SplitGate(specs, settings), GENESIS
        c0 = time.process_time()
        for t in range(n):
            recs = g.update(data, t, **shipped_call).records()
            if lines:
                _, head = chain_records(recs, head)
        return (time.process_time() - c0) / n * 1e6, head

    head = run(True)[1]  # warm-up (compilation) and the chain head
    records = min(run(False)[0] for _ in range(3))
    shipped = min(run(True)[0] for _ in range(3))
    print(f"update+records {records:.1f} us a tick (CPU); update+records+chained lines {shipped:.1f} us a tick; chain head {head[:16]}")


if __name__ == "__main__":
    main()
