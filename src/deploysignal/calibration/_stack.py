"""Stack the numeric arrays of several compiled configs that share one layout (batch evaluation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._exceptions import ConfigError
from ._config import CompiledConfig

__all__ = ["SHARED_KEYS", "stack_arrays"]

#: Arrays that depend only on signal metadata; identical across configs of one layout.
SHARED_KEYS = ("orient", "two_sided", "kind_rate", "kind_count")


def stack_arrays(configs: CompiledConfig | Sequence[CompiledConfig]) -> dict[str, np.ndarray]:
    """Numeric arrays with a leading stream axis ``P`` (``P = 1`` for a single config).

    All configs must have the same signals (names, directions, kinds), the same cell map and the same
    number of covariance blocks, as configs compiled from baselines on one timeline do. Shared arrays
    (:data:`SHARED_KEYS`) are returned without the stream axis.
    """
    cfgs = [configs] if isinstance(configs, CompiledConfig) else list(configs)
    if not cfgs:
        raise ConfigError("no configs to stack")
    first = cfgs[0]
    for c in cfgs[1:]:
        if [s.name for s in c.signals] != [s.name for s in first.signals] or [(s.direction, s.kind) for s in c.signals] != [
            (s.direction, s.kind) for s in first.signals
        ]:
            raise ConfigError("configs to stack must have the same signals")
        if c.cell_map != first.cell_map or len(c.covariances) != len(first.covariances):
            raise ConfigError("configs to stack must share cell layout (compile them on the same timeline)")
    out: dict[str, np.ndarray] = {}
    for key, val in first.arrays.items():
        if key in SHARED_KEYS:
            out[key] = val
        else:
            out[key] = np.stack([c.arrays[key] for c in cfgs]) if len(cfgs) > 1 else val[None]
    return out
