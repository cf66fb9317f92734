"""Definitions of the published (green) tables: data in `conf/publication.yaml`.

A definition says what a table counts, over which records and how it is cut; the
disclosure engine (`aggregates`, `suppression`, `disclosure_audit`) does the rest, the same
way for every table. Code lists are referenced by name from `conf/codes.yaml`, so a list is
maintained in one place and a table cannot silently drift from the one the extracts use.
Every mistake is a `ConfigError` naming the field, e.g.
`tables.ae_by_provider.dimensions[1].within`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caredata_spark.config import CONF_DIR, ConfigError, from_yaml, read_yaml
from caredata_spark.suppression import DisclosurePolicy

DEFAULT_PUBLICATION = CONF_DIR / "publication.yaml"
DEFAULT_CODES = CONF_DIR / "codes.yaml"

MEASURE_KINDS = ("persons", "records")
MATCH_KINDS = ("exact", "prefix")


@dataclass(frozen=True)
class Dimension:
    """A column the table is cut by; `within` nests it in a coarser one (district in area).

    Nesting makes the coarser level a margin of the finer one (hierarchy totals). `period`
    marks calendar periods (months): a cell of one period counts the same records in every
    publication whose window covers it, so successive publications share those cells and
    are protected together (`disclosure_history`).
    """

    name: str
    label: str = ""
    within: str | None = None
    period: bool = False

    @property
    def heading(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Filter:
    """Keep records whose `column` is in a code list (or literal `values`).

    `match: prefix` matches codes by their start, for ICD-10 categories (E10 covers E109).
    """

    column: str
    code_list: str | None = None
    values: list[str] = field(default_factory=list)
    match: str = "exact"

    def __post_init__(self) -> None:
        if self.match not in MATCH_KINDS:
            raise ConfigError(
                f"match: expected one of {', '.join(MATCH_KINDS)}, got {self.match!r}"
            )
        if self.code_list is None and not self.values:
            raise ConfigError("values: give a code_list or the values themselves")


@dataclass(frozen=True)
class Measure:
    """What a cell counts: distinct `persons` (by `column`) or `records` (rows).

    `additive` says whether a total equals the sum of its parts. It holds for records, and
    for persons when each person falls in exactly one category of every dimension (one
    area, age band and sex); where a person can be in several (several practices), totals
    are only bounded by their parts and the audit models them so.
    """

    count: str
    column: str = "person_id"
    label: str = ""
    additive: bool = True

    def __post_init__(self) -> None:
        if self.count not in MEASURE_KINDS:
            raise ConfigError(
                f"count: expected one of {', '.join(MEASURE_KINDS)}, got {self.count!r}"
            )


@dataclass(frozen=True)
class Rate:
    """Publish numerator/denominator * `per` beside the counts (e.g. prevalence per 1,000).

    The numerator is the measure restricted to records matching every `numerator` filter;
    the denominator is the measure itself. Both counts are protected like any other.
    """

    numerator: list[Filter]
    per: int = 1000
    label: str = ""

    def __post_init__(self) -> None:
        if not self.numerator:
            raise ConfigError("numerator: at least one filter is needed")
        if self.per <= 0:
            raise ConfigError(f"per: must be positive, got {self.per}")


@dataclass(frozen=True)
class TableDefinition:
    """One published table. `source` names the record-level frame the publisher builds.

    `split_by` names an outermost dimension (a hierarchy root) whose categories form
    sub-tables below the top level, protected in parallel (then the whole table is
    attacked at once).
    """

    title: str
    source: str
    measure: Measure
    dimensions: list[Dimension]
    filters: list[Filter] = field(default_factory=list)
    rate: Rate | None = None
    split_by: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ConfigError("dimensions: at least one dimension is needed")
        seen: set[str] = set()
        parents: set[str] = set()
        for i, dim in enumerate(self.dimensions):
            if dim.name in seen:
                raise ConfigError(f"dimensions[{i}].name: {dim.name!r} is listed twice")
            if dim.within is not None:
                if dim.within not in seen:
                    raise ConfigError(
                        f"dimensions[{i}].within: {dim.within!r} must be a dimension "
                        "listed before it"
                    )
                if dim.within in parents:
                    raise ConfigError(
                        f"dimensions[{i}].within: {dim.within!r} already has a finer dimension"
                    )
                parents.add(dim.within)
            seen.add(dim.name)
        periods = [i for i, d in enumerate(self.dimensions) if d.period]
        if len(periods) > 1:
            raise ConfigError(f"dimensions[{periods[1]}].period: only one dimension can be the period")
        for i in periods:
            if self.dimensions[i].within is not None or self.dimensions[i].name in parents:
                raise ConfigError(f"dimensions[{i}].period: a period dimension cannot be nested")
        roots = {d.name for d in self.dimensions if d.within is None}
        if self.split_by is not None and self.split_by not in roots:
            raise ConfigError(
                f"split_by: {self.split_by!r} is not an outermost dimension "
                f"(one of {', '.join(sorted(roots))})"
            )

    @property
    def period(self) -> str | None:
        """The dimension of calendar periods, if any (see `Dimension.period`)."""
        return next((d.name for d in self.dimensions if d.period), None)

    def hierarchies(self) -> tuple[tuple[str, ...], ...]:
        """Dimensions grouped into chains, coarsest first: ((area, district), (age_band,), ...)."""
        finer = {d.within: d.name for d in self.dimensions if d.within is not None}
        chains = []
        for dim in self.dimensions:
            if dim.within is None:
                chain = [dim.name]
                while chain[-1] in finer:
                    chain.append(finer[chain[-1]])
                chains.append(tuple(chain))
        return tuple(chains)


@dataclass(frozen=True)
class Pathway:
    """The linked pathway source: people with a `gp_code` event, and whether they were
    admitted with an `admission` primary diagnosis within `months` of their first one."""

    gp_code: Filter
    admission: Filter
    months: int = 12

    def __post_init__(self) -> None:
        if self.months <= 0:
            raise ConfigError(f"months: must be positive, got {self.months}")


@dataclass(frozen=True)
class Sources:
    """How the publisher builds its record-level sources (`caredata_spark.publish`).

    Ages are banded `age_band_years` wide up to the open band `oldest_band`+; hospital
    activity counts over the `period_months` months up to the reference date.
    """

    pathway: Pathway
    age_band_years: int = 5
    oldest_band: int = 90
    period_months: int = 12

    def __post_init__(self) -> None:
        for name in ("age_band_years", "oldest_band", "period_months"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.oldest_band % self.age_band_years:
            raise ConfigError(
                f"oldest_band: must be a multiple of age_band_years ({self.age_band_years}), "
                f"got {self.oldest_band}"
            )


@dataclass(frozen=True)
class Publication:
    """Everything `conf/publication.yaml` holds: one disclosure policy, many tables, and how
    their sources are built (absent from engine-only uses such as tests of one table)."""

    tables: dict[str, TableDefinition]
    disclosure: DisclosurePolicy = field(default_factory=DisclosurePolicy)
    sources: Sources | None = None


def _code_lists(codes: Any, where: str) -> dict[str, list[str]]:
    """The `code_lists:` section of `conf/codes.yaml`: list name -> codes."""
    lists = codes.get("code_lists") if isinstance(codes, dict) else None
    if not isinstance(lists, dict):
        raise ConfigError(f"{where}: code_lists: expected a mapping of list names to codes")
    for name, items in lists.items():
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: code_lists.{name}: expected a non-empty list of codes")
    return {str(name): [str(code) for code in items] for name, items in lists.items()}


def _resolve(f: Filter, lists: dict[str, list[str]], where: str) -> Filter:
    if f.code_list is None:
        return f
    if f.values:
        raise ConfigError(f"{where}.values: give a code_list or values, not both")
    if f.code_list not in lists:
        known = ", ".join(sorted(lists)) or "none"
        raise ConfigError(f"{where}.code_list: unknown code list {f.code_list!r} (known: {known})")
    return dataclasses.replace(f, values=lists[f.code_list])


def resolve_code_lists(publication: Publication, lists: dict[str, list[str]]) -> Publication:
    """Fill every filter's `values` from the named code list; unknown names are errors."""
    tables = {}
    for name, table in publication.tables.items():
        where = f"tables.{name}"
        filters = [_resolve(f, lists, f"{where}.filters[{i}]") for i, f in enumerate(table.filters)]
        rate = table.rate
        if rate is not None:
            rate = dataclasses.replace(
                rate,
                numerator=[
                    _resolve(f, lists, f"{where}.rate.numerator[{i}]")
                    for i, f in enumerate(rate.numerator)
                ],
            )
        tables[name] = dataclasses.replace(table, filters=filters, rate=rate)
    sources = publication.sources
    if sources is not None:
        where = "sources.pathway"
        pathway = dataclasses.replace(
            sources.pathway,
            gp_code=_resolve(sources.pathway.gp_code, lists, f"{where}.gp_code"),
            admission=_resolve(sources.pathway.admission, lists, f"{where}.admission"),
        )
        sources = dataclasses.replace(sources, pathway=pathway)
    return dataclasses.replace(publication, tables=tables, sources=sources)


def load_publication(
    path: str | Path = DEFAULT_PUBLICATION, codes_path: str | Path = DEFAULT_CODES
) -> Publication:
    """Load and validate the table definitions, with code lists resolved to codes."""
    path, codes_path = Path(path), Path(codes_path)
    publication = from_yaml(Publication, path)
    lists = _code_lists(read_yaml(codes_path), str(codes_path))
    try:
        return resolve_code_lists(publication, lists)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
