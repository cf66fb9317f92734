"""Data sharing agreements (`conf/agreements/<id>.yaml`) and the checks a release request passes.

Two kinds of problem, handled differently:

- an agreement that does not make sense (unknown dataset or field, identifiable field in
  an amber flow, end before start) is a `ConfigError` on load, naming the field;
- an agreement that is well formed but does not permit this release today (expired, not
  yet started, red without a legal basis for identifiable data, missing or self approval)
  is a `ReleaseRefused`, raised by `check_request`.

The release job audits both (`caredata_spark.audit`): every refusal leaves a row.

Fields a dataset may release: its contract columns other than identifiers and keys
(dates, codes, values), the generalised attributes the clinical tables hold or the vault
yields (`GENERALISED`), and, in a red flow only, identifiers from the vault (`IDENTIFIABLE`).
Every release also carries the two pseudonyms, which no agreement lists.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

from caredata_spark.config import CONF_DIR, ConfigError, from_yaml
from caredata_spark.contract import DATASETS, GP_IDENTITY, HES_IDENTITY, Dataset
from caredata_spark.errors import InputRefused

DEFAULT_DIRECTORY = CONF_DIR / "agreements"
AMBER, RED = "amber", "red"
FLOWS = (AMBER, RED)
S251, CONSENT, CIVIL_EMERGENCY, PUBLIC_TASK = "s251", "consent", "civil_emergency", "public_task"
RED_BASES = (S251, CONSENT, CIVIL_EMERGENCY)
BASES = (*RED_BASES, PUBLIC_TASK)
DAY, MONTH = "day", "month"
DATE_PRECISIONS = (DAY, MONTH)
# from the clinical tables (age at the activity, sex code, postcode district and area,
# provider code) or, for year_of_birth, from the vault's date of birth
GENERALISED = ("age", "year_of_birth", "sex", "district", "area", "provider")
IDENTIFIABLE = ("nhs_number", "dob", "postcode")  # decrypted from the vault: red only
_NOT_RELEASABLE = {*GP_IDENTITY, *HES_IDENTITY}


class ReleaseRefused(InputRefused):
    """A release or subject access request was refused; the message is the audited reason."""


def clinical_fields(dataset: Dataset) -> tuple[str, ...]:
    """Contract columns that carry no identifier: dates, codes, values."""
    return tuple(c for c in dataset.columns if c not in _NOT_RELEASABLE and c not in dataset.key)


def releasable_fields(dataset: Dataset, flow: str) -> tuple[str, ...]:
    identifiable = IDENTIFIABLE if flow == RED else ()
    return (*clinical_fields(dataset), *GENERALISED, *identifiable)


@dataclass(frozen=True)
class Recipient:
    organisation: str
    public_key: str  # the recipient's public key file (`caredata keys public` format)

    def __post_init__(self) -> None:
        if not self.organisation.strip():
            raise ConfigError("organisation: must not be empty")


@dataclass(frozen=True)
class LegalBasis:
    kind: str
    reference: str = ""  # e.g. the CAG reference of an s251 approval

    def __post_init__(self) -> None:
        if self.kind not in BASES:
            raise ConfigError(f"kind: expected one of {', '.join(BASES)}, got {self.kind!r}")
        if self.kind == S251 and not self.reference.strip():
            raise ConfigError("reference: an s251 basis needs its approval reference")

    def describe(self) -> str:
        return f"{self.kind} {self.reference}".strip()


@dataclass(frozen=True)
class Agreement:
    """One data sharing agreement: who receives what, why, when, and under which basis."""

    id: str
    recipient: Recipient
    purpose: str
    flow: str
    datasets: dict[str, list[str]]  # dataset -> fields released
    start: dt.date
    end: dt.date
    territory: str
    destroy_by: dt.date  # retention: the recipient destroys the data by this date
    legal_basis: LegalBasis | None = None
    dates: str = DAY  # precision of released dates
    approvers: list[str] = field(default_factory=list)  # who may approve a red release
    k_threshold: int = 5  # risk report: classes of fewer people than this are at risk

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise ConfigError(f"flow: expected amber or red, got {self.flow!r}")
        if not self.purpose.strip():
            raise ConfigError("purpose: must not be empty")
        if not self.datasets:
            raise ConfigError("datasets: at least one dataset is required")
        for name, fields in self.datasets.items():
            self._check_fields(name, fields)
        if self.end < self.start:
            raise ConfigError(f"end: {self.end} is before start {self.start}")
        if self.destroy_by < self.end:
            raise ConfigError(f"destroy_by: {self.destroy_by} is before end {self.end}")
        if self.dates not in DATE_PRECISIONS:
            raise ConfigError(f"dates: expected day or month, got {self.dates!r}")
        if self.k_threshold < 2:
            raise ConfigError(f"k_threshold: expected at least 2, got {self.k_threshold}")

    def _check_fields(self, name: str, fields: list[str]) -> None:
        if name not in DATASETS:
            raise ConfigError(f"datasets.{name}: unknown dataset (known: {', '.join(DATASETS)})")
        allowed = releasable_fields(DATASETS[name], self.flow)
        for i, wanted in enumerate(fields):
            if wanted in IDENTIFIABLE and self.flow != RED:
                raise ConfigError(f"datasets.{name}[{i}]: {wanted} is identifiable: red flow only")
            if wanted not in allowed:
                raise ConfigError(
                    f"datasets.{name}[{i}]: {wanted!r} cannot be released from {name} "
                    f"(releasable: {', '.join(allowed)})"
                )
        if len(set(fields)) != len(fields):
            raise ConfigError(f"datasets.{name}: a field is listed twice")

    @property
    def overrides_objections(self) -> bool:
        """Type 2 objections yield only to a red release under a civil emergency."""
        return self.flow == RED and self.legal_basis is not None and self.legal_basis.kind == CIVIL_EMERGENCY

    def fields(self) -> list[str]:
        """Every released field as `dataset.field`, for the manifest and the audit."""
        return [f"{name}.{f}" for name, fields in self.datasets.items() for f in fields]


def agreement_path(agreement_id: str, directory: str | Path | None = None) -> Path:
    root = Path(directory) if directory else DEFAULT_DIRECTORY
    if not agreement_id or "/" in agreement_id or agreement_id.startswith("."):
        raise ConfigError(f"agreement id {agreement_id!r} is not a file name")
    return root / f"{agreement_id}.yaml"


def load_agreement(agreement_id: str, directory: str | Path | None = None) -> Agreement:
    """The agreement in `<directory>/<id>.yaml`, validated; its key path made absolute."""
    path = agreement_path(agreement_id, directory)
    if not path.exists():
        raise ConfigError(f"{path}: no such agreement")
    agreement = from_yaml(Agreement, path)
    if agreement.id != agreement_id:
        raise ConfigError(f"{path}: id: {agreement.id!r} differs from the file name")
    key = str(path.parent / agreement.recipient.public_key)  # relative to the agreement
    return replace(agreement, recipient=replace(agreement.recipient, public_key=key))


def check_request(
    agreement: Agreement, today: dt.date, requester: str, approvers: list[str]
) -> None:
    """Refuse a release the agreement does not permit today; the message is the reason.

    Red needs a basis for identifiable data and two distinct approvers named in the
    agreement, neither of them the requester (four eyes).
    """
    if today < agreement.start:
        raise ReleaseRefused(f"agreement {agreement.id} starts on {agreement.start}")
    if today > agreement.end:
        raise ReleaseRefused(f"agreement {agreement.id} expired on {agreement.end}")
    if not requester.strip():
        raise ReleaseRefused("the requester must be named")
    if agreement.flow != RED:
        return
    basis = agreement.legal_basis
    if basis is None or basis.kind not in RED_BASES:
        raise ReleaseRefused(
            f"agreement {agreement.id} is red but has no legal basis for identifiable data "
            f"(needs one of: {', '.join(RED_BASES)})"
        )
    named = set(approvers)
    if len(named) < 2:
        raise ReleaseRefused("a red release needs two distinct approvers")
    if requester in named:
        raise ReleaseRefused("the requester cannot approve their own release")
    unauthorised = sorted(named - set(agreement.approvers))
    if unauthorised:
        raise ReleaseRefused(
            f"not approvers of agreement {agreement.id}: {', '.join(unauthorised)}"
        )
