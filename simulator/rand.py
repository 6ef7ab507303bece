"""Counter-based random numbers: every draw is a pure function of its address.

A value is addressed by `(seed, stream, day, resident, slot)`; `keyed_u64` hashes the address
with the SplitMix64 finaliser (the output function of Java's SplittableRandom), applied once
per key component so that neighbouring addresses give unrelated values. Because nothing is
drawn "in order", resident 31,337's routine on 3 May is the same whether it is generated
alone, in a chunk of 4,096 residents, or as part of a month: chunking and windows never
change a byte. Whole chunks are drawn in one vectorised call, which is what makes a district
of 40,000 residents cheap to generate (one numpy `Generator` per resident and day would cost
280,000 constructions a week, and tie each day's draws to the days before it).

`stream` names what is drawn ("flush.time", "meter.mode", ...) so adding a draw never shifts
another. Streams are hashed from their names with a fixed function (not Python's `hash`,
which is salted per process).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


def _mix_int(x: int) -> int:
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * _M1) & _MASK
    x = ((x ^ (x >> 27)) * _M2) & _MASK
    return x ^ (x >> 31)


def _mix(x: U64) -> U64:
    """SplitMix64 on an array, in place where numpy allows (uint64 arithmetic wraps)."""
    x += np.uint64(_GOLDEN)
    x ^= x >> np.uint64(30)
    x *= np.uint64(_M1)
    x ^= x >> np.uint64(27)
    x *= np.uint64(_M2)
    x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=4096)
def _stream_key(seed: int, stream: str, day: int) -> int:
    key = _mix_int(seed & _MASK)
    for byte in stream.encode("utf-8"):  # FNV-style fold, then mixed: stable across runs
        key = _mix_int(key ^ byte)
    return _mix_int(key ^ (day & _MASK))


def keyed_u64(
    seed: int,
    stream: str,
    residents: npt.ArrayLike,
    *,
    day: int = 0,
    slots: int | None = None,
) -> U64:
    """64 random bits per resident (shape [n]) or per resident and slot ([n, slots])."""
    base = np.asarray(residents, dtype=np.int64).astype(np.uint64)
    base ^= np.uint64(_stream_key(seed, stream, day))
    x = _mix(base)
    if slots is None:
        return x
    grid = np.repeat(x[:, None], slots, axis=1)
    grid ^= (np.arange(1, slots + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]
    return _mix(grid)


def uniform(
    seed: int,
    stream: str,
    residents: npt.ArrayLike,
    *,
    day: int = 0,
    slots: int | None = None,
) -> F64:
    """Uniform floats in [0, 1) with 53 random bits, addressed like `keyed_u64`."""
    bits = keyed_u64(seed, stream, residents, day=day, slots=slots)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(
    seed: int,
    stream: str,
    residents: npt.ArrayLike,
    *,
    day: int = 0,
    slots: int | None = None,
) -> F64:
    """Standard normal values (Box-Muller on two independent uniform streams)."""
    u1 = uniform(seed, stream + "#1", residents, day=day, slots=slots)
    u2 = uniform(seed, stream + "#2", residents, day=day, slots=slots)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def between(
    seed: int,
    stream: str,
    residents: npt.ArrayLike,
    low: float,
    high: float,
    *,
    day: int = 0,
    slots: int | None = None,
) -> F64:
    """Uniform floats in [low, high)."""
    return low + (high - low) * uniform(seed, stream, residents, day=day, slots=slots)


def choice(
    seed: int,
    stream: str,
    residents: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    day: int = 0,
) -> npt.NDArray[np.intp]:
    """An index into `weights` per resident, drawn in proportion to the weights."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    u = uniform(seed, stream, residents, day=day)
    return np.searchsorted(cdf, u, side="right").astype(np.intp)
