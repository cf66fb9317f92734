"""What the generator makes, as validated data: `conf/synth.yaml`, then overrides.

Layers, later ones win: `conf/synth.yaml` (every default, documented there), the `synth:`
section of the `--conf` file, then command-line options. Every rate lives here so a test
or a benchmark can change one without touching code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from caredata_spark.config import CONF_DIR, ConfigError, from_mapping, read_yaml

DEFAULT_SYNTH_CONF = CONF_DIR / "synth.yaml"
FORMATS = ("csv", "parquet")
MAX_PEOPLE = 200_000_000  # NHS number and record key spaces are sized for this


def _check_rate(where: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: expected a rate between 0 and 1, got {value}")


def _check_rates(obj: Any) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float):
            _check_rate(f.name, value)


@dataclass(frozen=True)
class AgeBand:
    """A five-year band of the age pyramid: share of the population, share female."""

    start: int
    share: float
    female: float

    def __post_init__(self) -> None:
        _check_rate("female", self.female)
        if self.share < 0 or self.start < 0:
            raise ConfigError(f"start and share must be >= 0, got {self.start}, {self.share}")


@dataclass(frozen=True)
class Population:
    """People, households and the geography that makes identifiers collide as in England."""

    age_bands: list[AgeBand]
    household_size: float
    households_per_postcode: int
    postcodes_per_district: int
    districts_per_area: int
    sectors_per_district: int
    min_areas: int
    areas: list[str]
    people_per_practice: int
    people_per_provider: int
    min_providers: int
    out_of_area_care: float
    twins: float
    same_sex_twins: float
    movers: float
    move_years: int
    local_moves: float
    registration_years: int

    def __post_init__(self) -> None:
        for name in ("out_of_area_care", "twins", "same_sex_twins", "movers", "local_moves"):
            _check_rate(name, getattr(self, name))
        if not self.age_bands or [b.start for b in self.age_bands] != sorted(
            {b.start for b in self.age_bands}
        ):
            raise ConfigError("age_bands: expected bands in increasing order of start age")
        if not 1 <= self.sectors_per_district <= 10:
            raise ConfigError("sectors_per_district: a postcode sector is one digit (1-10)")
        if not self.areas or len(set(self.areas)) != len(self.areas):
            raise ConfigError("areas: expected a list of distinct postcode areas")
        if not all(a.isalpha() and a.isupper() and 1 <= len(a) <= 2 for a in self.areas):
            raise ConfigError("areas: a postcode area is one or two capital letters")
        positive = (
            "household_size", "households_per_postcode", "postcodes_per_district",
            "districts_per_area", "min_areas", "people_per_practice", "people_per_provider",
            "min_providers", "move_years", "registration_years",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")


@dataclass(frozen=True)
class ValueSpec:
    """A numeric observation: normal(mean, sd), at least `minimum`, rounded to `decimals`."""

    mean: float
    sd: float
    decimals: int = 0
    minimum: float = 0.0


@dataclass(frozen=True)
class CodeEntry:
    """One code of a catalogue: relative weight, who can have it, how it rises with age."""

    code: str
    weight: float = 1.0
    sex: int | None = None  # 1 or 2: only this sex
    min_age: int = 0
    max_age: int = 150
    age_trend: float = 1.0  # weight multiplier per decade of age above 40 (divisor below)
    value: ValueSpec | None = None

    def __post_init__(self) -> None:
        if self.weight < 0 or self.age_trend <= 0:
            raise ConfigError(f"{self.code}: weight must be >= 0 and age_trend > 0")
        if self.sex not in (None, 1, 2):
            raise ConfigError(f"{self.code}: sex must be 1 or 2")


@dataclass(frozen=True)
class Activity:
    """Mean events per person-year across the population, shaped by age group and sex."""

    rate: float
    by_age: list[float]
    female: float = 1.0


@dataclass(frozen=True)
class ActivityRates:
    age_groups: list[int]  # first age of each group; shared by catalogues and conditions
    frailty_sigma: float  # lognormal spread of a person's use of services (mean 1)
    gp_events: Activity
    hes_apc: Activity
    hes_op: Activity
    hes_ae: Activity

    def __post_init__(self) -> None:
        if not self.age_groups or self.age_groups[0] != 0 or self.age_groups != sorted(
            set(self.age_groups)
        ):
            raise ConfigError("age_groups: expected increasing first ages starting at 0")
        for name in ("gp_events", "hes_apc", "hes_op", "hes_ae"):
            activity: Activity = getattr(self, name)
            if len(activity.by_age) != len(self.age_groups):
                raise ConfigError(f"{name}.by_age: expected one multiplier per age group")


@dataclass(frozen=True)
class Condition:
    """A long-term condition: prevalence by age group, and how often it is coded."""

    name: str
    code_list: str  # SNOMED CT list in conf/codes.yaml
    icd10: str  # code it adds to hospital episodes as a secondary diagnosis
    prevalence: list[float]
    male: float = 1.0  # prevalence multiplier for men
    events_per_year: float = 2.0
    monitoring: list[CodeEntry] | None = None

    def __post_init__(self) -> None:
        for i, p in enumerate(self.prevalence):
            _check_rate(f"prevalence[{i}]", p)


@dataclass(frozen=True)
class Objections:
    """Shares of people who dissent (type 1, type 2) and of dissents later withdrawn."""

    type1: float
    type2: float
    withdrawn: float
    years: int  # dissent dates fall in the last `years` before the end date

    def __post_init__(self) -> None:
        _check_rates(self)


@dataclass(frozen=True)
class NoiseRates:
    """Identifier noise per record. Rates of one identifier are exclusive (their sum <= 1)."""

    nhs_missing: float = 0.0
    nhs_typo: float = 0.0  # one digit mistyped
    nhs_placeholder: float = 0.0  # all-same digits or the 999 test range
    dob_swap: float = 0.0  # day and month swapped (where both are <= 12 and differ)
    dob_digit: float = 0.0  # one digit wrong
    dob_placeholder: float = 0.0  # 1900-01-01
    sex_unknown: float = 0.0  # 0 or 9
    sex_wrong: float = 0.0
    postcode_stale: float = 0.0  # the previous address
    postcode_missing: float = 0.0
    postcode_pseudo: float = 0.0  # ZZ99 3CZ / 3VZ / 3WZ
    postcode_format: float = 0.0  # case and spacing (independent of the above)

    def __post_init__(self) -> None:
        _check_rates(self)
        for prefix in ("nhs", "dob", "sex", "postcode"):
            total = sum(self.kinds(prefix).values())
            if total > 1.0:
                raise ConfigError(f"{prefix}_*: rates of one identifier add up to {total} > 1")

    def kinds(self, prefix: str) -> dict[str, float]:
        """The exclusive noise kinds of one identifier and their rates."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name.startswith(prefix + "_") and f.name != "postcode_format"
        }


@dataclass(frozen=True)
class NoiseByDataset:
    gp: NoiseRates  # per registration: a practice's record of a patient is consistent
    hes_apc: NoiseRates
    hes_op: NoiseRates
    hes_ae: NoiseRates


@dataclass(frozen=True)
class DirtyRates:
    """Rows that break the file format or a field rule; exclusive (their sum <= 1)."""

    bad_date: float = 0.0
    non_numeric: float = 0.0
    short_nhs: float = 0.0
    unknown_code: float = 0.0
    extra_field: float = 0.0  # CSV only: one more field than the header
    missing_field: float = 0.0  # CSV only: one field fewer than the header

    def __post_init__(self) -> None:
        _check_rates(self)
        if sum(self.kinds().values()) > 1.0:
            raise ConfigError("dirty row rates add up to more than 1")

    def kinds(self, structural: bool = True) -> dict[str, float]:
        """Kinds and rates; without `structural`, only those a Parquet file can carry."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if structural or f.name not in ("extra_field", "missing_field")
        }


@dataclass(frozen=True)
class DirtyByDataset:
    gp_patients: DirtyRates
    gp_events: DirtyRates
    hes_apc: DirtyRates
    hes_op: DirtyRates
    hes_ae: DirtyRates


@dataclass(frozen=True)
class FileRates:
    """Per-file variation: column order, a provider's own extra column, a cut last line."""

    shuffled_columns: float
    extra_column: float
    truncated: float  # CSV only
    parquet_row_group: int

    def __post_init__(self) -> None:
        for name in ("shuffled_columns", "extra_column", "truncated"):
            _check_rate(name, getattr(self, name))
        if self.shuffled_columns + self.extra_column > 1.0:
            raise ConfigError("shuffled_columns + extra_column must be <= 1")
        if self.parquet_row_group <= 0:
            raise ConfigError("parquet_row_group: must be positive")


@dataclass(frozen=True)
class Catalogues:
    """Code frequencies with age and sex patterns, per field that carries a code."""

    gp_events: list[CodeEntry]
    apc_primary: list[CodeEntry]
    apc_secondary: list[CodeEntry]
    apc_operations: list[CodeEntry]
    admission_methods: list[CodeEntry]
    op_specialties: list[CodeEntry]
    op_attendance: list[CodeEntry]
    op_diagnoses: list[CodeEntry]
    ae_diagnoses: list[CodeEntry]
    ae_disposals: list[CodeEntry]

    def __post_init__(self) -> None:
        for f in fields(self):
            entries: list[CodeEntry] = getattr(self, f.name)
            codes = [e.code for e in entries]
            if not codes or len(set(codes)) != len(codes):
                raise ConfigError(f"{f.name}: expected a non-empty list of distinct codes")


@dataclass(frozen=True)
class Hospital:
    """Shape of hospital records beyond the codes."""

    apc_max_diagnoses: int  # at most 20 (DIAG_01..DIAG_20)
    apc_max_operations: int  # at most 24 (OPERTN_01..OPERTN_24)
    elective_operation: float  # share of elective episodes with a procedure
    emergency_operation: float
    elective_stay_days: float  # mean length of stay; day cases are 0
    emergency_stay_days: float
    op_diagnosis_coded: float  # share of outpatient appointments with DIAG_01
    ae_diagnosis_coded: float

    def __post_init__(self) -> None:
        if not 1 <= self.apc_max_diagnoses <= 20 or not 1 <= self.apc_max_operations <= 24:
            raise ConfigError("apc_max_diagnoses must be 1-20 and apc_max_operations 1-24")
        for name in (
            "elective_operation", "emergency_operation", "op_diagnosis_coded",
            "ae_diagnosis_coded",
        ):
            _check_rate(name, getattr(self, name))


@dataclass(frozen=True)
class SynthSettings:
    people: int
    seed: int
    end_date: str  # last day of the data period, YYYY-MM-DD
    years: int  # length of the data period
    format: str  # csv or parquet
    population: Population
    activity: ActivityRates
    conditions: list[Condition]
    objections: Objections
    noise: NoiseByDataset
    dirty: DirtyByDataset
    files: FileRates
    hospital: Hospital
    catalogues: Catalogues
    codes_file: str | None = None  # conf/codes.yaml unless set
    objections_file: str | None = None  # conf/objections.yaml unless set
    truth: str | None = None  # ground truth folder; default: `truth` beside the landing zone

    def __post_init__(self) -> None:
        if not 1 <= self.people <= MAX_PEOPLE:
            raise ConfigError(f"people: expected 1 .. {MAX_PEOPLE:,}, got {self.people}")
        if not 1 <= self.years <= 20:
            raise ConfigError(f"years: expected 1 .. 20, got {self.years}")
        if self.format not in FORMATS:
            raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        try:
            end = dt.date.fromisoformat(self.end_date)
        except ValueError:
            raise ConfigError(f"end_date: expected YYYY-MM-DD, got {self.end_date!r}") from None
        if end > dt.date.today():
            raise ConfigError(
                f"end_date: {self.end_date} is in the future, and ingest quarantines activity dated "
                "after today (DATE_FUTURE)"
            )
        groups = len(self.activity.age_groups)
        for c in self.conditions:
            if len(c.prevalence) != groups:
                raise ConfigError(f"conditions.{c.name}.prevalence: one rate per age group")

    @property
    def end(self) -> dt.date:
        return dt.date.fromisoformat(self.end_date)

    @property
    def start(self) -> dt.date:
        """First day of the period: `years` whole years before the day after `end`."""
        after = self.end + dt.timedelta(days=1)
        try:
            return after.replace(year=after.year - self.years)
        except ValueError:  # 29 February
            return after.replace(year=after.year - self.years, day=28)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of mappings; lists and scalars of `override` replace those of `base`."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_synth_settings(
    overrides: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    **options: Any,
) -> SynthSettings:
    """`conf/synth.yaml` (or `path`), then `overrides` (a `synth:` section), then `options`.

    Options that are None are not given and leave the configured value in place.
    """
    conf_path = Path(path) if path else DEFAULT_SYNTH_CONF
    data = merge(read_yaml(conf_path) or {}, overrides or {})
    data = merge(data, {k: v for k, v in options.items() if v is not None})
    try:
        return from_mapping(SynthSettings, data)
    except ConfigError as err:
        raise ConfigError(f"{conf_path}: synth: {err}") from None
