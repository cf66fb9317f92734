"""Random draws as pure functions of (seed, stream, keys): the same row gets the same value
in any partition, on any number of executors, in any run.

Spark's `rand(seed)` depends on the partition a row lands in, so nothing here uses it.
Every draw is `xxhash64(seed, stream, keys...)` turned into a uniform number; a `stream`
names what the draw is for, so two purposes never share a draw. All of it is built-in
Spark expressions: no Python runs per row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

_UNIFORM_BITS = 53  # a double holds 53 bits of mantissa


def _element_type(values: Sequence[object]) -> str:
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int" if all(-(2**31) <= v < 2**31 for v in values) else "bigint"  # type: ignore[operator]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "double"
    raise TypeError("a constant array holds strings, booleans or numbers, one kind")


def constant_at(values: Sequence[object], position: Column) -> Column:
    """The element of a constant list at a 1-based `position` column.

    The list goes to the JVM as ONE JSON literal, which the optimiser folds into the array
    literal `F.lit(list)` would give. `F.lit` calls the JVM once per element: the weight
    tables of the code catalogues (thousands of numbers, read by every draw) took about 20 s
    of planning per synthetic run that way.
    """
    array = F.from_json(F.lit(json.dumps(list(values))), f"array<{_element_type(values)}>")
    return F.element_at(array, position)


@dataclass(frozen=True)
class Draws:
    """The seed of a run; every random value of the run derives from it."""

    seed: int

    def hash(self, stream: str, *keys: Column) -> Column:
        """A 64-bit hash of (seed, stream, keys)."""
        return F.xxhash64(F.lit(self.seed), F.lit(stream), *keys)

    def uniform(self, stream: str, *keys: Column) -> Column:
        """U[0, 1): the top 53 bits of the hash as a double."""
        bits = F.shiftrightunsigned(self.hash(stream, *keys), 64 - _UNIFORM_BITS)
        return bits.cast("double") / float(1 << _UNIFORM_BITS)

    def below(self, stream: str, *keys: Column, n: Column | int) -> Column:
        """An int uniform on 0 .. n-1 (1 <= n < 2^31)."""
        return F.floor(self.uniform(stream, *keys) * n).cast("int")

    def normal(self, stream: str, *keys: Column) -> Column:
        """N(0, 1) by Box-Muller from two independent uniforms."""
        radius = F.sqrt(-2.0 * F.log(1.0 - self.uniform(f"{stream}/r", *keys)))
        return radius * F.cos(2.0 * math.pi * self.uniform(f"{stream}/a", *keys))

    def exponential(self, stream: str, *keys: Column, mean: Column | float) -> Column:
        return -F.log(1.0 - self.uniform(stream, *keys)) * mean

    def count(self, stream: str, *keys: Column, mean: Column) -> Column:
        """A whole number with expectation `mean`: floor(mean + U).

        Over-dispersion comes from the person-level frailty that scales `mean`, so a plain
        stochastic rounding is enough here and needs no loop (a Poisson draw would).
        """
        return F.floor(mean + self.uniform(stream, *keys)).cast("int")

    def key(self, stream: str, value: Column, bits: int, *scope: Column) -> Column:
        """A permutation of 0 .. 2^bits-1, keyed by the seed and `scope` (e.g. a practice).

        Record keys and practice-local patient ids come from here: distinct inputs give
        distinct outputs, so they are unique by construction (no collision check), yet
        they reveal nothing of person ids, and one person's ids differ between scopes.
        """
        return permute(
            value, bits, self.hash(f"{stream}/k1", *scope), self.hash(f"{stream}/k2", *scope)
        )


# Odd multipliers below 2^23: x * m stays below 2^63 for x < 2^40, so no long overflow.
_MULTIPLIERS = (0x5BD1E9, 0x27D4EB, 0x165667)


def permute(value: Column, bits: int, key1: Column, key2: Column) -> Column:
    """A bijection on [0, 2^bits), keyed: add, multiply by odd, xor-shift, each invertible."""
    if not 8 <= bits <= 40:
        raise ValueError(f"bits must be 8 .. 40, got {bits}")
    mask = (1 << bits) - 1
    shift = bits // 2 + 1
    x = (value + (key1.bitwiseAND(F.lit(mask)))).bitwiseAND(F.lit(mask))
    for multiplier in _MULTIPLIERS:
        x = (x * multiplier).bitwiseAND(F.lit(mask))
        x = x.bitwiseXOR(F.shiftright(x, shift))
    return (x + key2.bitwiseAND(F.lit(mask))).bitwiseAND(F.lit(mask))


@dataclass(frozen=True)
class Categorical:
    """Draw one of `values` with given weights, per stratum, in O(1) (Walker's alias method).

    `weights[s][i]` is the weight of value i in stratum s (e.g. an age band and sex); a
    stratum needs a positive total weight.
    """

    values: tuple[str, ...]
    probability: tuple[tuple[float, ...], ...]
    alias: tuple[tuple[int, ...], ...]

    @classmethod
    def from_weights(
        cls, values: Sequence[str], weights: Sequence[Sequence[float]]
    ) -> Categorical:
        probability, alias = [], []
        for stratum, row in enumerate(weights):
            if len(row) != len(values):
                raise ValueError(f"stratum {stratum}: {len(row)} weights for {len(values)} values")
            p, a = _alias_table(row)
            probability.append(p)
            alias.append(a)
        return cls(tuple(values), tuple(probability), tuple(alias))

    @classmethod
    def single(cls, values: Sequence[str], weights: Sequence[float]) -> Categorical:
        return cls.from_weights(values, [weights])

    def index(self, draws: Draws, stream: str, *keys: Column, stratum: Column | None = None) -> Column:
        """0-based index of the drawn value."""
        slot = draws.below(f"{stream}/slot", *keys, n=len(self.values))
        row = F.lit(0) if stratum is None else stratum
        position = row * len(self.values) + slot + 1  # the tables flattened, row by row
        keep = constant_at([p for row_p in self.probability for p in row_p], position)
        other = constant_at([a for row_a in self.alias for a in row_a], position)
        return F.when(draws.uniform(f"{stream}/keep", *keys) < keep, slot).otherwise(other)

    def value_at(self, index: Column) -> Column:
        return constant_at(self.values, index.cast("int") + 1)

    def draw(self, draws: Draws, stream: str, *keys: Column, stratum: Column | None = None) -> Column:
        return self.value_at(self.index(draws, stream, *keys, stratum=stratum))


def _alias_table(weights: Sequence[float]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Vose's construction: each slot keeps its value with probability p, else its alias."""
    n = len(weights)
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("a categorical distribution needs a positive weight")
    scaled = [w * n / total for w in weights]
    probability = [1.0] * n
    alias = list(range(n))
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        probability[lo], alias[lo] = scaled[lo], hi
        scaled[hi] -= 1.0 - scaled[lo]
        (small if scaled[hi] < 1.0 else large).append(hi)
    return tuple(probability), tuple(alias)


def stratum_index(value: Column, starts: Sequence[int]) -> Column:
    """0-based index of the range [starts[i], starts[i+1]) that holds `value`."""
    index = F.lit(0)
    for i, start in enumerate(starts[1:], start=1):
        index = F.when(value >= start, F.lit(i)).otherwise(index)
    return index
