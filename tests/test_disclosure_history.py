"""Successive publications of a provider x month table, attacked together.

Each version is a window of months over one interior of true counts (providers x months),
built here without the engine; the window moves by a month between versions, as a monthly
publication's does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from disclosure_tables import marked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caredata_spark.aggregates import TOTAL, VALUE, TableShape
from caredata_spark.config import ConfigError
from caredata_spark.disclosure_audit import PRIMARY, SUPPRESSED, ProtectionRule
from caredata_spark.disclosure_history import (
    DEFINITION,
    PUBLICATION,
    audit_with_history,
    joint_model,
    protect_with_history,
)
from caredata_spark.publication_tables import Dimension, Filter, Measure, TableDefinition
from caredata_spark.suppression import DisclosurePolicy, protect_subtable

SHAPE = TableShape(hierarchies=(("provider",), ("month",)), period="month")
POLICY = DisclosurePolicy()
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# a window of months 0-3 then 1-4: provider p1's new month (4) is hidden as 3, and its
# window totals with the months both publish pin it when each is protected on its own
INTERIOR = np.array(
    [
        [31, 9, 32, 15, 33],
        [29, 9, 4, 26, 3],
        [36, 16, 17, 14, 25],
        [5, 23, 25, 38, 15],
        [3, 12, 35, 28, 18],
    ]
)


def window(interior: np.ndarray, start: int, months: int) -> pd.DataFrame:
    """Cells of months start..start+months-1 with every margin; month labels are absolute."""
    rows = []
    part = interior[:, start : start + months]
    for p in [*range(part.shape[0]), None]:
        for m in [*range(months), None]:
            value = part[slice(None) if p is None else p, slice(None) if m is None else m].sum()
            rows.append(
                {
                    "provider": TOTAL if p is None else f"p{p}",
                    "month": TOTAL if m is None else f"m{start + m:02d}",
                    VALUE: int(value),
                }
            )
    cells = pd.DataFrame(rows)
    return cells[cells[VALUE] > 0].reset_index(drop=True)


def version(cells: pd.DataFrame, number: int, policy: DisclosurePolicy = POLICY) -> pd.DataFrame:
    """A version protected on its own, as every publication was before the history."""
    cells = marked(cells)
    cells[SUPPRESSED] = protect_subtable(cells, SHAPE, policy)[SUPPRESSED].to_numpy()
    return cells.assign(**{PUBLICATION: number, DEFINITION: "test"})


def followed_by(earlier: list[pd.DataFrame], cells: pd.DataFrame, number: int) -> pd.DataFrame:
    """The next version, protected against the earlier ones."""
    own = version(cells, number)
    protected = protect_with_history(pd.concat([*earlier, own], ignore_index=True), SHAPE, POLICY, number)
    return protected.assign(**{PUBLICATION: number, DEFINITION: "test"})


def attacked(versions: list[pd.DataFrame], rule: ProtectionRule = POLICY.protection) -> pd.DataFrame:
    number = int(versions[-1][PUBLICATION].iloc[0])
    return audit_with_history(pd.concat(versions, ignore_index=True), SHAPE, rule, number, exact=True)


def test_two_windows_protected_one_by_one_give_a_small_count_away() -> None:
    first, second = version(window(INTERIOR, 0, 4), 1), version(window(INTERIOR, 1, 4), 2)
    assert attacked([first])["protected"].all() and attacked([second])["protected"].all()
    together = attacked([first, second])
    assert not together["protected"].all()


def test_a_window_protected_against_the_last_keeps_every_small_count_wide() -> None:
    first = version(window(INTERIOR, 0, 4), 1)
    second = followed_by([first], window(INTERIOR, 1, 4), 2)
    result = attacked([first, second])
    assert result["protected"].all()
    assert len(result) > 0
    assert second.loc[second[PRIMARY], SUPPRESSED].all()


def shared_statuses(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    keys = ["provider", "month"]
    months = a[a["month"] != TOTAL].merge(b[b["month"] != TOTAL], on=keys, suffixes=("_a", "_b"))
    return months[months[f"{VALUE}_a"] == months[f"{VALUE}_b"]]


def test_a_month_both_windows_cover_keeps_its_earlier_status() -> None:
    first = version(window(INTERIOR, 0, 4), 1)
    second = followed_by([first], window(INTERIOR, 1, 4), 2)
    shared = shared_statuses(first, second)
    assert len(shared) == 18  # months 1-3: five providers and the total of each
    assert (shared[f"{SUPPRESSED}_a"] == shared[f"{SUPPRESSED}_b"]).all()


@PROPERTY
@given(
    st.integers(2, 4).flatmap(
        lambda providers: st.lists(
            st.one_of(st.integers(1, 7), st.integers(8, 40)),
            min_size=providers * 6,
            max_size=providers * 6,
        ).map(lambda values: np.array(values).reshape(providers, 6))
    )
)
def test_three_monthly_publications_withstand_being_attacked_together(interior: np.ndarray) -> None:
    versions = [version(window(interior, 0, 4), 1)]
    for number in (2, 3):
        versions.append(followed_by(versions, window(interior, number - 1, 4), number))
        assert attacked(versions)["protected"].all()
    for earlier, later in zip(versions, versions[1:]):
        shared = shared_statuses(earlier, later)
        assert (shared[f"{SUPPRESSED}_a"] == shared[f"{SUPPRESSED}_b"]).all()


def test_a_month_changed_by_late_records_is_a_count_of_its_own() -> None:
    first = version(window(INTERIOR, 0, 4), 1)
    revised = INTERIOR.copy()
    revised[1, 2] += 1  # a late record for provider p1 in month 2, hidden before (4)
    second = followed_by([first], window(revised, 1, 4), 2)
    model = joint_model(pd.concat([first, second], ignore_index=True), SHAPE, 2)
    month_2 = model.cells[(model.cells["provider"] == "p1") & (model.cells["month"] == "m02")]
    assert sorted(month_2[VALUE]) == [4, 5]
    assert attacked([first, second])["protected"].all()


def test_the_joint_model_shares_month_cells_and_their_relations_once() -> None:
    first, second = version(window(INTERIOR, 0, 4), 1), version(window(INTERIOR, 1, 4), 2)
    model = joint_model(pd.concat([first, second], ignore_index=True), SHAPE, 2)
    # 30 cells each; months 1-3 (five providers and the total, 18 cells) are one count
    assert len(first) == len(second) == 30
    assert len(model.cells) == 30 + 30 - 18
    # relations: each version's 6 provider rows and 5 month columns, months 1-3 once
    assert len(model.relations.parent) == 2 * (6 + 5) - 3
    assert model.cells["in_new"].sum() == 30 and model.cells["in_earlier"].sum() == 30


def test_an_earlier_count_already_too_narrow_does_not_block_the_next() -> None:
    """The rule was widened since the first publication, whose counts it now fails: hiding
    more in the next cannot mend that, so those are left out, the next one's are not."""
    first = version(window(INTERIOR, 0, 4), 1)
    wider = DisclosurePolicy(protection=ProtectionRule(min_width=20))
    assert not attacked([first], wider.protection)["protected"].all()
    own = version(window(INTERIOR, 1, 4), 2, wider)
    second = protect_with_history(pd.concat([first, own], ignore_index=True), SHAPE, wider, 2)
    result = attacked([first, second.assign(**{PUBLICATION: 2})], wider.protection)
    assert result["protected"].all()
    assert set(zip(result["provider"], result["month"])) == {("p1", "m04")}  # the new small count


def definition(**changes: object) -> TableDefinition:
    fields: dict[str, object] = dict(
        title="A&E",
        source="hes_ae",
        measure=Measure(count="records", label="Attendances"),
        dimensions=[Dimension("provider"), Dimension("month", label="Month", period=True)],
    )
    return TableDefinition(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_definitions_fingerprint_follows_what_it_counts_not_its_labels() -> None:
    base = definition()
    assert base.period == "month"
    assert definition(title="Attendances", description="new words").fingerprint() == base.fingerprint()
    assert definition(
        dimensions=[Dimension("provider", label="Trust"), Dimension("month", period=True)]
    ).fingerprint() == base.fingerprint()
    filtered = definition(filters=[Filter(column="provider", values=["RAA"])])
    assert filtered.fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        ([Dimension("month", period=True), Dimension("week", period=True)], r"dimensions\[1\].period: only one"),
        ([Dimension("year"), Dimension("month", within="year", period=True)], r"dimensions\[1\].period: .*nested"),
        ([Dimension("month", period=True), Dimension("day", within="month")], r"dimensions\[0\].period: .*nested"),
    ],
)
def test_one_period_dimension_and_not_nested(dimensions: list[Dimension], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        definition(dimensions=dimensions)
