"""The submitter register: which organisations may send which datasets.

A submission's organisation is the folder it lands in (`<dataset>/<submitter>/`). Folders
are created when a provider is onboarded, but a misfiled upload or a folder made by
mistake would otherwise be read as that organisation's data. With a register configured
(`submitters:` in the configuration: a YAML file of ODS codes, refreshed from the ODS
extracts of GP practices and NHS trusts), a file from an organisation not registered for
its dataset's side is refused before any of it is read, with its reason in the ledger.
Without one, every well-placed folder is accepted, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caredata_spark.config import ConfigError, from_yaml
from caredata_spark.contract import DATASETS

# ODS code shapes: a GP practice is a letter and five digits (A81001); an NHS trust or
# other hospital provider three to five letters and digits (RTH, RTH01 is one of its sites)
CODE_SHAPES = {"gp_practices": re.compile(r"[A-Z][0-9]{5}"), "hospital_providers": re.compile(r"[A-Z0-9]{3,5}")}
NAMES = {"gp_practices": "GP practice", "hospital_providers": "hospital provider"}


def _codes(side: str, entries: Any) -> frozenset[str]:
    """One side's ODS codes, upper-cased; an error names the entry that is not one."""
    if entries is None:
        return frozenset()
    if not isinstance(entries, list):
        raise ConfigError(f"{side}: expected a list of ODS codes")
    for i, code in enumerate(entries):
        if not isinstance(code, str) or not CODE_SHAPES[side].fullmatch(code.upper()):
            raise ConfigError(f"{side}[{i}]: {code!r} is not an ODS code of a {NAMES[side]}")
    return frozenset(code.upper() for code in entries)


@dataclass(frozen=True)
class _RegisterFile:
    """The register file's fields, as `config.from_yaml` reads and checks them."""

    gp_practices: Any = None
    hospital_providers: Any = None

    def __post_init__(self) -> None:
        for side in CODE_SHAPES:
            object.__setattr__(self, side, _codes(side, getattr(self, side)))


@dataclass(frozen=True)
class SubmitterRegister:
    path: str
    codes: dict[str, frozenset[str]]  # side -> ODS codes

    def refusal(self, dataset: str, submitter: str) -> str | None:
        """Why a file of `dataset` from `submitter` is refused, or None when registered."""
        side = "gp_practices" if DATASETS[dataset].source == "gp" else "hospital_providers"
        if submitter.upper() in self.codes[side]:
            return None
        return f"submitter {submitter} is not a registered {NAMES[side]} (submitter register {self.path})"


def load_register(path: str) -> SubmitterRegister:
    """Read and check a register; errors name the file and the entry."""
    register = from_yaml(_RegisterFile, Path(path))
    return SubmitterRegister(path, {side: getattr(register, side) for side in CODE_SHAPES})
