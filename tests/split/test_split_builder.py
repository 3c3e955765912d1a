""":class:`~deploysignal.split.BlockBuilder` keeps each block's counts as they were when added: a
caller that refills one buffer per tick (a list, an int32 or an int64 array) gets every tick's counts,
not the last tick's repeated (a quiet last tick must not overwrite an earlier harmful burst)."""

from __future__ import annotations

import numpy as np
import pytest

from deploysignal.split import BlockBuilder


@pytest.mark.parametrize("kind", ["list", "int32", "int64"])
def test_add_block_copies_a_reused_buffer(kind):
    make = {"list": lambda: [0, 0], "int32": lambda: np.zeros(2, dtype=np.int32), "int64": lambda: np.zeros(2, dtype=np.int64)}[kind]
    bb = BlockBuilder(2)
    a, c1 = make(), make()
    for t in range(3):
        a[0], a[1] = t, 10 * t  # refilled in place for every tick
        c1[0], c1[1] = 2 * t, 20 * t
        bb.add_block(10, 20, a, c1)
        bb.end_tick()
    a[0] = c1[0] = 99  # and touched again before build
    blocks = bb.build()
    assert blocks.a.tolist() == [[0, 0], [1, 10], [2, 20]]
    assert blocks.c1.tolist() == [[0, 0], [2, 20], [4, 40]]
    assert blocks.a.dtype == blocks.c1.dtype == np.int64
