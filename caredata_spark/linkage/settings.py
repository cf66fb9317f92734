"""Tunable parameters of linkage (`linkage:` in conf/*.yaml), validated on load.

Only the scored step has knobs. The deterministic steps are the published CPRD-HES
algorithm and the blocking rules are part of the method, so neither is configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from caredata_spark.config import ConfigError, from_mapping


@dataclass(frozen=True)
class LinkageSettings:
    """`min_probability` is the one quality knob of the scored step.

    A scored link needs posterior match probability >= min_probability against every
    non-match AND the same odds against the runner-up person, so the expected share of
    false links among scored links is at most 1 - min_probability (under the model).
    """

    min_probability: float = 0.999
    em_sample_signatures: int = 50_000  # training uses the pairs of about this many records
    u_sample_pairs: int = 2_000_000  # random pairs u is estimated from
    em_max_iterations: int = 200
    em_tolerance: float = 1e-7
    # m and u are estimated on the first run, then again every this many runs; the runs
    # between reuse the latest estimate (12: once a year for monthly runs; 1: every run)
    refit_every_runs: int = 12
    # record-side blocking keys (the scored residue's 15 per signature, the training
    # sample's one per session, adoption's founders' 2) are broadcast up to this many;
    # each key row carries its record's identity hashes, about 550 bytes, so the default
    # is up to about 1.1 GB per broadcast. Above it, the pairs join is a shuffle sort-merge join
    broadcast_residue_keys: int = 2_000_000

    def __post_init__(self) -> None:
        if not 0.5 < self.min_probability < 1.0:
            raise ConfigError(
                f"min_probability: expected a probability in (0.5, 1), got {self.min_probability}"
            )
        if self.em_sample_signatures < 1:
            raise ConfigError(f"em_sample_signatures: expected >= 1, got {self.em_sample_signatures}")
        if self.u_sample_pairs < 1:
            raise ConfigError(f"u_sample_pairs: expected >= 1, got {self.u_sample_pairs}")
        if self.em_max_iterations < 1:
            raise ConfigError(f"em_max_iterations: expected >= 1, got {self.em_max_iterations}")
        if self.refit_every_runs < 1:
            raise ConfigError(f"refit_every_runs: expected >= 1, got {self.refit_every_runs}")
        if self.broadcast_residue_keys < 0:
            raise ConfigError(f"broadcast_residue_keys: expected >= 0, got {self.broadcast_residue_keys}")
        if not self.em_tolerance > 0:
            raise ConfigError(f"em_tolerance: expected > 0, got {self.em_tolerance}")

    def broadcasts(self, record_keys: int) -> bool:
        """Whether a record side of this many blocking keys is broadcast."""
        return record_keys <= self.broadcast_residue_keys

    @property
    def min_weight(self) -> float:
        """The threshold as a match weight (log2 odds): 0.999 -> 9.97 bits."""
        return math.log2(self.min_probability / (1.0 - self.min_probability))


def linkage_settings(section: dict[str, Any]) -> LinkageSettings:
    return from_mapping(LinkageSettings, section, "linkage")
