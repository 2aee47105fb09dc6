"""The burst design's noise model: the recorded 30 s series, resampled (issue 22).

``tests/data/noise/bursts-30s.txt`` holds 2,927 pairs of 5 ms bursts, one pair every
~10 ms, of a noisy 2-core VM: ``getppid`` (ns per call, the ``null`` op) and an integer
loop (Mops/s, the ``compute`` op).  Its speed moves in phases of seconds under a fast
burst-to-burst jitter, and both enter a simulated run the way they would enter a real one:

* a round (one held set) takes a random contiguous stretch of the series;
* its blocks take consecutive runs of ``envs`` bursts of that stretch (one burst per
  environment; each burst of an op is a row, so a block spans ``envs`` rows, 10 ms each:
  twice as long as 5 ms bursts back to back take, which only loosens the pairing);
* in each block the environment and the baseline take two distinct slots of a fresh
  random order, as the runner's shuffled blocks give them;
* each environment's launch adds its own multiplicative effect per round (lognormal,
  ``launch_sd``: what relaunching between rounds adds), the same for all its blocks;
* the environment's figures carry the true effect.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from bench.matrix import QUICK

SERIES = Path(__file__).parent / "data" / "noise" / "bursts-30s.txt"
COLUMNS = {"null": 1, "compute": 2}  # the op's column in SERIES

ROUNDS = QUICK["rounds"]  # held sets of a quick run
ENVS = 8  # environments taking turns in a block, as in the main job's quick run
# Blocks per round: 30 s of an op over 8 rounds is 3.75 s a round; a block of 8 bursts of
# 5 ms with ~1.25 ms of command and reply around each takes ~50 ms: 75 blocks.
BLOCKS = 75
LAUNCH_SD = 0.02  # per-launch effect, SD of its log


@functools.cache
def series(op: str = "null") -> np.ndarray:
    """Log of the recorded burst figures of ``op``, in time order (read-only)."""
    x = np.log(np.loadtxt(SERIES, usecols=COLUMNS[op]))
    x.setflags(write=False)
    return x


def simulate(
    rng: np.random.Generator,
    effects,
    *,
    op: str = "null",
    rounds: int = ROUNDS,
    blocks: int = BLOCKS,
    envs: int = ENVS,
    launch_sd: float = LAUNCH_SD,
) -> tuple[np.ndarray, np.ndarray]:
    """(env, base) burst figures, each (figures, rounds, blocks): figure i's environment
    carries the true ratio ``effects[i]`` over the baseline; figures are independent."""
    x = series(op)
    eff = np.log(np.asarray(effects, dtype=float))[:, None, None]
    shape = (eff.shape[0], rounds)
    start = rng.integers(0, x.size - blocks * envs + 1, size=shape)
    rows = start[..., None] + envs * np.arange(blocks)  # first burst of each block
    slot_e = rng.integers(0, envs, size=rows.shape)
    slot_b = (slot_e + rng.integers(1, envs, size=rows.shape)) % envs  # another slot
    launch = rng.normal(0.0, launch_sd, size=(2, *shape, 1))
    env = np.exp(x[rows + slot_e] + launch[0] + eff)
    base = np.exp(x[rows + slot_b] + launch[1])
    return env, base
