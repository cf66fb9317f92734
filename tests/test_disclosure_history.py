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
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from caredata_spark.aggregates import TOTAL, VALUE, TableShape
from caredata_spark.config import ConfigError
from caredata_spark.disclosure_audit import PRIMARY, SUPPRESSED, ProtectionRule
from caredata_spark.disclosure_history import (
    PUBLICATION,
    audit_with_history,
    joint_model,
    protect_with_history,
)
from caredata_spark.publication_tables import Dimension, Measure, TableDefinition
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
    return cells.assign(**{PUBLICATION: number})


def followed_by(earlier: list[pd.DataFrame], cells: pd.DataFrame, number: int) -> pd.DataFrame:
    """The next version, protected against the earlier ones."""
    own = version(cells, number)
    protected = protect_with_history(
        pd.concat([*earlier, own], ignore_index=True), SHAPE, POLICY, number
    )
    return protected.assign(**{PUBLICATION: number})


def attacked(
    versions: list[pd.DataFrame], rule: ProtectionRule = POLICY.protection
) -> pd.DataFrame:
    number = int(versions[-1][PUBLICATION].iloc[0])
    return audit_with_history(
        pd.concat(versions, ignore_index=True), SHAPE, rule, number, exact=True
    )


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
# a review's case: the third version narrowed the second's counts, and no complement next
# to them could mend it (the new window's totals, further away, can)
@example(np.array([[1, 1, 8, 2, 8, 1], [1, 2, 1, 1, 2, 10], [3, 10, 1, 6, 2, 1]]))
# no one complement widened a count here, two together did
@example(np.array([[1, 9, 1, 3, 5, 1], [1, 1, 2, 1, 6, 9]]))
def test_three_monthly_publications_withstand_being_attacked_together(interior: np.ndarray) -> None:
    versions = [version(window(interior, 0, 4), 1)]
    for number in (2, 3):
        versions.append(followed_by(versions, window(interior, number - 1, 4), number))
        assert attacked(versions)["protected"].all()
    for earlier, later in zip(versions, versions[1:]):
        shared = shared_statuses(earlier, later)
        assert (shared[f"{SUPPRESSED}_a"] == shared[f"{SUPPRESSED}_b"]).all()


def test_monthly_versions_hide_little_more_than_each_would_alone() -> None:
    """Most of a new version's cells are settled by earlier ones, so its complements must
    be chosen for what they widen: the cheapest neighbour of a new month's small count (its
    month) cannot help when its provider's window total pins it, and taking neighbours in
    turn hid whole months (85% of a 50-provider table's cells by the 13th version)."""
    rng = np.random.default_rng(5)
    small = rng.random((20, 20)) < 0.15
    interior = np.where(small, rng.integers(1, 8, (20, 20)), rng.integers(8, 200, (20, 20)))
    versions = [version(window(interior, 0, 12), 1)]
    for number in range(2, 9):
        versions.append(followed_by(versions, window(interior, number - 1, 12), number))
        alone = version(window(interior, number - 1, 12), number)
        assert versions[-1][SUPPRESSED].mean() <= alone[SUPPRESSED].mean() + 0.1
    assert attacked(versions)["protected"].all()


def test_a_count_revised_by_late_records_keeps_its_categorys_status() -> None:
    """A review's case: one late record took p1's month 3 from 30 (hidden as a complement)
    to 31. A revised count is a count of its own, but shown next to the earlier one hidden
    it would pin p1's small counts of months 1 and 2 for anyone taking the two as equal:
    it stays hidden, as do the month's total and every other cell its category hid."""
    interior = np.array(
        [[16, 26, 4, 20, 40], [33, 2, 2, 30, 5], [29, 5, 26, 36, 6], [1, 6, 1, 3, 9]]
    )
    revised = interior.copy()
    revised[1, 3] += 1
    first = version(window(interior, 0, 4), 1)
    second = followed_by([first], window(revised, 1, 4), 2)
    model = joint_model(pd.concat([first, second], ignore_index=True), SHAPE, 2)
    counts = model.cells[(model.cells["provider"] == "p1") & (model.cells["month"] == "m03")]
    assert sorted(counts[VALUE]) == [30, 31]
    months = ["m01", "m02", "m03"]
    hidden_before = first[first["month"].isin(months) & first[SUPPRESSED]][["provider", "month"]]
    again = hidden_before.merge(second, on=["provider", "month"])
    assert len(again) == len(hidden_before) and again[SUPPRESSED].all()
    assert attacked([first, second])["protected"].all()


def test_a_revised_total_shown_again_may_not_pin_the_count_it_lost() -> None:
    """A review's case: late records emptied p0's month 1, hidden as 2 before; its month
    total fell from 50 to 48, still shown as 50. Shown again, beside month 1's unchanged
    cells, it pinned the earlier 2 to [1, 4]. A revised count is the new version's own, so
    it may be hidden as a complement, and the earlier 2 keeps the rule's width."""
    interior = np.array([[20, 2, 30, 25, 18], [15, 22, 9, 31, 12], [3, 26, 14, 19, 27]])
    revised = interior.copy()
    revised[0, 1] = 0
    revised[2, 3] = 0
    first = version(window(interior, 0, 4), 1)
    second = followed_by([first], window(revised, 1, 4), 2)
    result = attacked([first, second])
    assert result["protected"].all()
    p0 = result[(result["provider"] == "p0") & (result["month"] == "m01")]
    assert len(p0) == 1 and (p0["feasible_max"] - p0["feasible_min"] >= 7).all()


def test_a_window_that_only_its_totals_can_mend_is_not_refused() -> None:
    """A review's case: the second version pinned the first's small counts of month 0 to
    [1, 7], and no complement beside them helps; one of the new window's totals does."""
    interior = np.array([[10, 0, 23, 32, 23], [4, 25, 27, 24, 18], [1, 0, 0, 6, 6]])
    first = version(window(interior, 0, 4), 1)
    second = followed_by([first], window(interior, 1, 4), 2)
    assert attacked([first, second])["protected"].all()


def test_a_change_of_rounding_between_versions_is_attacked_with_both_intervals() -> None:
    """A review's case: nearest 5, then midpoint 6. The first version's intervals alone say
    what was known before; the second's narrower ones must not excuse a pinned count."""
    midpoint6 = DisclosurePolicy(rounding="midpoint6")
    interior = np.array([[25, 8, 5, 11, 18], [26, 30, 28, 5, 22], [6, 5, 3, 3, 35]])
    first = version(window(interior, 0, 4), 1)
    own = marked(window(interior, 1, 4), rounding="midpoint6")
    own[SUPPRESSED] = protect_subtable(own, SHAPE, midpoint6)[SUPPRESSED].to_numpy()
    own[PUBLICATION] = 2
    second = protect_with_history(pd.concat([first, own], ignore_index=True), SHAPE, midpoint6, 2)
    result = attacked([first, second.assign(**{PUBLICATION: 2})])
    assert result["protected"].all()
    assert (result["feasible_max"] - result["feasible_min"] >= 7).all()


def test_the_joint_model_shares_month_cells_and_their_relations_once() -> None:
    first, second = version(window(INTERIOR, 0, 4), 1), version(window(INTERIOR, 1, 4), 2)
    model = joint_model(pd.concat([first, second], ignore_index=True), SHAPE, 2)
    # 30 cells each; months 1-3 (five providers and the total, 18 cells) are one count
    assert len(first) == len(second) == 30
    assert len(model.cells) == 30 + 30 - 18
    # relations: each version's 6 provider rows and 5 month columns, months 1-3 once
    assert len(model.relations.parent) == 2 * (6 + 5) - 3
    assert model.cells["in_new"].sum() == 30 and model.cells["in_earlier"].sum() == 30


def test_an_earlier_count_already_too_narrow_is_not_narrowed_further() -> None:
    """The rule was widened since the first publication, some of whose counts it now fails:
    hiding more in the next cannot widen them, so they may keep the width they had (and
    do not refuse the table), but no less; the new version's own counts get the new rule."""
    first = version(window(INTERIOR, 0, 4), 1)
    wider = DisclosurePolicy(protection=ProtectionRule(min_width=20))
    before = attacked([first], wider.protection)
    assert not before["protected"].all()
    own = version(window(INTERIOR, 1, 4), 2, wider)
    second = protect_with_history(pd.concat([first, own], ignore_index=True), SHAPE, wider, 2)
    result = attacked([first, second.assign(**{PUBLICATION: 2})], wider.protection)
    assert result["protected"].all()
    keys = ["provider", "month"]
    both = before.merge(result, on=keys, suffixes=("_before", "_after"))
    width = {
        when: both[f"feasible_max_{when}"] - both[f"feasible_min_{when}"]
        for when in ("before", "after")
    }
    assert len(both) == len(before)
    assert (width["after"] >= np.minimum(width["before"], 20) - 1e-6).all()
    new_only = result[result["month"] == "m04"]
    assert len(new_only) and (new_only["feasible_max"] - new_only["feasible_min"] >= 20).all()


def definition(**changes: object) -> TableDefinition:
    fields: dict[str, object] = dict(
        title="A&E",
        source="hes_ae",
        measure=Measure(count="records", label="Attendances"),
        dimensions=[Dimension("provider"), Dimension("month", label="Month", period=True)],
    )
    return TableDefinition(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        (
            [Dimension("month", period=True), Dimension("week", period=True)],
            r"dimensions\[1\].period: only one",
        ),
        (
            [Dimension("year"), Dimension("month", within="year", period=True)],
            r"dimensions\[1\].period: .*nested",
        ),
        (
            [Dimension("month", period=True), Dimension("day", within="month")],
            r"dimensions\[0\].period: .*nested",
        ),
    ],
)
def test_one_period_dimension_and_not_nested(dimensions: list[Dimension], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        definition(dimensions=dimensions)
