"""Code catalogues as stratified categorical draws, and the shared code lists they use.

A catalogue (`conf/synth.yaml` `catalogues:`) lists codes with weights and age/sex
patterns. It becomes one alias table per stratum, a stratum being an age band of the
population pyramid and a sex, so that e.g. cataract operations cluster in the old and
deliveries among women of 16-45, and a green table gets both large and small cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from caredata_spark.clinical_codes import VERHOEFF_D, VERHOEFF_P
from caredata_spark.config import CONF_DIR, ConfigError, from_mapping, read_yaml
from caredata_spark.synthetic.sampling import Categorical, Draws, constant_at
from caredata_spark.synthetic.settings import CodeEntry, SynthSettings

DEFAULT_CODES = CONF_DIR / "codes.yaml"
SEXES = (1, 2)
OLDEST_AGE = 104  # the last band of the age pyramid ends here


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit is the Verhoeff check digit (SNOMED CT identifiers)."""
    if not digits.isdigit():
        return False
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = VERHOEFF_D[check][VERHOEFF_P[position % 8][int(digit)]]
    return check == 0


@dataclass(frozen=True)
class CodeLists:
    """The `code_lists` section of `conf/codes.yaml` (other sections have other readers)."""

    code_lists: dict[str, list[str]]

    def snomed(self, name: str) -> list[str]:
        """A list of SNOMED CT ids, each checked for its Verhoeff check digit."""
        if name not in self.code_lists:
            known = ", ".join(sorted(self.code_lists))
            raise ConfigError(f"code_lists.{name}: no such list (known: {known})")
        codes = self.code_lists[name]
        bad = [c for c in codes if not verhoeff_valid(c)]
        if bad:
            raise ConfigError(f"code_lists.{name}: {bad[0]!r} is not a valid SNOMED CT id")
        return codes


def load_code_lists(path: str | Path | None = None) -> CodeLists:
    codes_path = Path(path) if path else DEFAULT_CODES
    data = read_yaml(codes_path)
    section = {"code_lists": data.get("code_lists")} if isinstance(data, dict) else data
    try:
        return from_mapping(CodeLists, section)
    except ConfigError as err:
        raise ConfigError(f"{codes_path}: {err}") from None


@dataclass(frozen=True)
class Strata:
    """Age bands (first ages, from the pyramid) times sex; index = band * 2 + sex - 1."""

    band_starts: tuple[int, ...]

    def bounds(self) -> list[tuple[int, int, int]]:
        """(sex, first age, last age) of every stratum in index order."""
        ends = [*(s - 1 for s in self.band_starts[1:]), OLDEST_AGE]
        return [
            (sex, start, end)
            for start, end in zip(self.band_starts, ends)
            for sex in SEXES
        ]

    def index(self, band: Column, sex: Column) -> Column:
        return band * len(SEXES) + sex - 1


def _weight(entry: CodeEntry, sex: int, first: int, last: int) -> float:
    """Weight of a code among people of one sex aged first..last (inclusive)."""
    if entry.sex is not None and entry.sex != sex:
        return 0.0
    overlap = min(last, entry.max_age) - max(first, entry.min_age) + 1
    if overlap <= 0:
        return 0.0
    middle = (first + last + 1) / 2
    return entry.weight * overlap / (last - first + 1) * entry.age_trend ** ((middle - 40) / 10)


def weights_by_stratum(entries: Sequence[CodeEntry], strata: Strata) -> list[list[float]]:
    return [[_weight(e, *bounds) for e in entries] for bounds in strata.bounds()]


@dataclass(frozen=True)
class Catalogue:
    """Codes with their stratified draw and, for observations, how to draw a VALUE."""

    entries: tuple[CodeEntry, ...]
    categorical: Categorical

    @classmethod
    def stratified(cls, name: str, entries: Sequence[CodeEntry], strata: Strata) -> Catalogue:
        weights = weights_by_stratum(entries, strata)
        for row, (sex, first, last) in zip(weights, strata.bounds()):
            if sum(row) <= 0:
                raise ConfigError(f"catalogues.{name}: no code for sex {sex} aged {first}-{last}")
        return cls.side_by_side([(entries, weights)])

    @classmethod
    def side_by_side(
        cls, parts: Sequence[tuple[Sequence[CodeEntry], Sequence[Sequence[float]]]]
    ) -> Catalogue:
        """Several catalogues as one: part k's strata draw only part k's codes.

        Strata are numbered across parts in order; a code may appear in two parts (with
        different values), since draws return positions, not codes.
        """
        entries = [e for part, _ in parts for e in part]
        rows: list[list[float]] = []
        offset = 0
        for part, part_rows in parts:
            after = len(entries) - offset - len(part)
            rows.extend([0.0] * offset + list(row) + [0.0] * after for row in part_rows)
            offset += len(part)
        return cls(tuple(entries), Categorical.from_weights([e.code for e in entries], rows))

    def index(self, draws: Draws, stream: str, *keys: Column, stratum: Column | None = None) -> Column:
        return self.categorical.index(draws, stream, *keys, stratum=stratum)

    def draw(self, draws: Draws, stream: str, *keys: Column, stratum: Column | None = None) -> Column:
        return self.categorical.draw(draws, stream, *keys, stratum=stratum)

    def code_at(self, index: Column) -> Column:
        return self.categorical.value_at(index)

    def value_at(self, index: Column, normal: Column) -> Column:
        """VALUE of the code at `index` as text; null for codes without a value."""
        specs = [e.value for e in self.entries]
        if all(s is None for s in specs):
            return F.lit(None).cast("string")
        position = index.cast("int") + 1

        def lookup(values: Sequence[float]) -> Column:
            return constant_at([float(v) for v in values], position)

        decimals = constant_at([-1 if s is None else s.decimals for s in specs], position)
        number = F.greatest(
            lookup([0.0 if s is None else s.minimum for s in specs]),
            lookup([0.0 if s is None else s.mean for s in specs])
            + lookup([0.0 if s is None else s.sd for s in specs]) * normal,
        )
        return (
            F.when(decimals == 0, F.round(number, 0).cast("long").cast("string"))
            .when(decimals == 1, F.round(number, 1).cast("decimal(12,1)").cast("string"))
            .when(decimals >= 2, F.round(number, 2).cast("decimal(12,2)").cast("string"))
        )


@dataclass(frozen=True)
class CodeBook:
    """Every catalogue of a run, built once on the driver from the settings."""

    strata: Strata
    gp_events: Catalogue  # routine strata, then one stratum per condition
    apc_primary: Catalogue
    apc_secondary: Catalogue
    apc_operations: Catalogue
    admission_methods: Catalogue
    op_specialties: Catalogue
    op_attendance: Catalogue
    op_diagnoses: Catalogue
    ae_diagnoses: Catalogue
    ae_disposals: Catalogue

    @classmethod
    def build(cls, settings: SynthSettings, codes: CodeLists) -> CodeBook:
        strata = Strata(tuple(b.start for b in settings.population.age_bands))
        catalogues = settings.catalogues
        routine = list(catalogues.gp_events)
        parts = [(routine, weights_by_stratum(routine, strata))]
        for condition in settings.conditions:
            listed = codes.snomed(condition.code_list)
            # earlier codes of a list are the commoner ones: weight 1, 1/2, 1/3, ...
            entries = [CodeEntry(code=c, weight=1 / (rank + 1)) for rank, c in enumerate(listed)]
            entries += condition.monitoring or []
            parts.append((entries, [[e.weight for e in entries]]))
        stratified = {
            f.name: Catalogue.stratified(f.name, getattr(catalogues, f.name), strata)
            for f in fields(catalogues)
            if f.name != "gp_events"
        }
        return cls(strata=strata, gp_events=Catalogue.side_by_side(parts), **stratified)

    def condition_stratum(self, position: int) -> int:
        """Stratum of `gp_events` that draws the codes of the position-th condition."""
        return len(self.strata.bounds()) + position
