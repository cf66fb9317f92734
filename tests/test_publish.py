"""`caredata publish` end to end on a small hand-made warehouse, and its sources' rules.

The warehouse (a few hundred people, some tiny practices, districts and providers so
that many cells are small) is written once per module with the store; the whole
publication runs once over it and the tests read what it left behind.
"""

from __future__ import annotations

import dataclasses
import json
import datetime as dt
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.aggregates import COUNT, TOTAL, UNKNOWN, TableShape
from caredata_spark.cli import main
from caredata_spark.disclosure_audit import DisclosureRisk, ProtectionRule
from caredata_spark.disclosure_history import audit_with_history
from caredata_spark.publication_tables import (
    Dimension,
    Filter,
    Measure,
    Publication,
    TableDefinition,
    load_publication,
)
from caredata_spark.errors import UsageError
from caredata_spark.publications import latest_publication
from caredata_spark.publish import (
    MANIFEST,
    SOURCES,
    Warehouse,
    age_band,
    default_out,
    gp_registered,
    publish,
    require_all_published,
    whole_months_end,
)
from caredata_spark.storage import ARCHIVE_PROPERTIES, DeltaStore, open_store
from caredata_spark.submissions import LEDGER
from caredata_spark.tables import (
    AUDIT,
    LINK_MAP,
    PUBLICATIONS,
    SUBMISSIONS,
    clinical,
    green,
    publication_cells,
    table_path,
)

REFERENCE = dt.date(2025, 3, 31)
DIABETES, HYPERTENSION = "44054006", "59621000"
SVG = "{http://www.w3.org/2000/svg}"

# practice -> (district, weight): a tiny practice and tiny districts make small cells
PRACTICES = {"A81001": ("LS1", 12), "B82002": ("M1", 10), "C83003": ("LS9", 1)}
DISTRICTS = {"LS1": 10, "LS2": 6, "LS9": 1, "M1": 9, "M2": 1}
PEOPLE = 260  # plus a few with a story of their own


@dataclass(frozen=True)
class Registration:
    key: str
    person: str | None  # link map person id; None = did not link
    district: str
    reg: dt.date
    age_at_reg: int
    sex: str = "1"
    dereg: dt.date | None = None
    run: int = 1


@dataclass
class Built:
    """What the fixture wrote, for expected values computed without Spark."""

    root: Path
    registrations: list[Registration]
    events: list[tuple[str, dt.date, str]]  # key, date, SNOMED code
    apc: list[tuple[str, str, dt.date, str | None]]  # key, person, admission date, DIAG_01
    ae: list[tuple[str, str, dt.date]]  # key, provider, arrival


def _ledger(spark: SparkSession, runs: dict[str, int]) -> DataFrame:
    rows = [
        (sid, sid.split("-")[0], None, None, "csv", 1, run, "ingested", None, 1, 1, 0, 0, None)
        for sid, run in runs.items()
    ]
    return spark.createDataFrame(rows, LEDGER)


def make_registrations(rng: random.Random) -> list[Registration]:
    regs = []
    for i in range(PEOPLE):
        practice = rng.choices(list(PRACTICES), [w for _, w in PRACTICES.values()])[0]
        district = rng.choices(list(DISTRICTS), list(DISTRICTS.values()))[0]
        years_ago = rng.randint(0, 20)
        regs.append(
            Registration(
                key=f"{practice}/{i}",
                person=f"p{i}",
                district=district,
                reg=dt.date(REFERENCE.year - years_ago, 3, 31),
                age_at_reg=max(0, rng.randint(0, 95) - years_ago),
                sex=rng.choice("1122221119"),
            )
        )
    return regs + [
        # a mover: counted once, at the later practice and district
        Registration("A81001/m1", "mover", "LS1", dt.date(2010, 3, 31), 30),
        Registration("B82002/m2", "mover", "M1", dt.date(2020, 3, 31), 40),
        # left before the reference date
        Registration("A81001/gone", "gone", "LS1", dt.date(2012, 3, 31), 50, dereg=dt.date(2024, 1, 1)),
        # re-sent by a later extract with a deregistration: the later row wins
        Registration("A81001/resent", "resent", "LS2", dt.date(2012, 3, 31), 50, run=1),
        Registration(
            "A81001/resent", "resent", "LS2", dt.date(2012, 3, 31), 50,
            dereg=dt.date(2024, 6, 1), run=2,
        ),
        # did not link: a person of its own
        Registration("B82002/unlinked", None, "M2", dt.date(2015, 3, 31), 60, sex="2"),
    ]


@pytest.fixture(scope="module")
def built(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("publish") / "warehouse"
    store = open_store(spark)
    rng = random.Random(6)
    regs = make_registrations(rng)
    runs: dict[str, int] = {}

    def sub(dataset: str, run: int = 1) -> str:
        runs[f"{dataset}-{run}"] = run
        return f"{dataset}-{run}"

    def write(name: str, rows: list[tuple], schema: str) -> None:
        store.write(spark.createDataFrame(rows, schema), table_path(str(root), name))

    write(
        clinical("gp_patients"),
        [
            (sub("gp_patients", r.run), r.key, r.key.split("/")[0], r.reg, r.dereg, r.reg,
             r.age_at_reg, r.sex, r.district, r.district.rstrip("0123456789"))
            for r in regs
        ],
        "submission_id string, record_key string, provider string, REG_DATE date, "
        "dereg_date date, activity_date date, age int, sex string, district string, area string",
    )
    events = []
    diabetic: dict[str, dt.date] = {}
    for r in regs[:PEOPLE]:
        if rng.random() < 0.45:
            first = dt.date(2022, 1, 1) + dt.timedelta(days=rng.randint(0, 1000))
            diabetic.setdefault(r.person, first)
            events += [(r.key, first, DIABETES), (r.key, first + dt.timedelta(days=90), DIABETES)]
        if rng.random() < 0.3:
            events.append((r.key, dt.date(2020, 5, 5), HYPERTENSION))
    # the mover's code at their old practice counts; one after the reference date does not
    events += [("A81001/m1", dt.date(2011, 1, 1), DIABETES), ("B82002/m2", REFERENCE + dt.timedelta(days=1), HYPERTENSION)]
    write(
        clinical("gp_events"),
        [(sub("gp_events"), k, d, code, d) for k, d, code in events],
        "submission_id string, record_key string, EVENT_DATE date, SNOMED_CODE string, "
        "activity_date date",
    )
    apc = []
    persons = [r.person for r in regs if r.person]
    for i in range(220):
        person = rng.choice(persons)
        admitted = REFERENCE - dt.timedelta(days=rng.randint(0, 500))
        if person in diabetic and rng.random() < 0.5:
            admitted = diabetic[person] + dt.timedelta(days=rng.randint(10, 500))
        diag = rng.choice(["E119", "E119", "I10X", "J459", "C509", "K359"] + ["Q210"] * (i % 40 == 0))
        diag = None if i % 25 == 7 else diag  # a missing or malformed code (published Unknown)
        apc.append((f"EPI{i}", person, "RAA", admitted, admitted, diag, rng.randint(20, 90), rng.choice("12")))
        if i % 10 == 0:  # a second episode of the same spell: still one admission
            apc.append((f"EPI{i}b", person, "RAA", admitted, admitted + dt.timedelta(days=2), "Z515", 50, "1"))
    write(
        clinical("hes_apc"),
        [(sub("hes_apc"), k, prov, adm, start, diag, age, sex, adm)
         for k, _, prov, adm, start, diag, age, sex in apc],
        "submission_id string, record_key string, provider string, ADMIDATE date, "
        "EPISTART date, DIAG_01 string, age int, sex string, activity_date date",
    )
    op = [
        (f"OP{i}", REFERENCE - dt.timedelta(days=rng.randint(0, 364)),
         rng.choice("5556623"), rng.choice(["100", "100", "110", "300", "300", "999"]))
        for i in range(240)
    ]
    write(
        clinical("hes_op"),
        [(sub("hes_op"), k, d, att, spec, d) for k, d, att, spec in op],
        "submission_id string, record_key string, APPTDATE date, ATTENDED string, "
        "TRETSPEF string, activity_date date",
    )
    ae = [
        (f"AE{i}", rng.choices(["RAA", "RBB", "RCC"], [20, 10, 1])[0],
         REFERENCE - dt.timedelta(days=rng.randint(0, 364)))
        for i in range(240)
    ]
    ae.append(("AE-old", "RAA", dt.date(2023, 1, 1)))  # before the period
    write(
        clinical("hes_ae"),
        [(sub("hes_ae"), k, prov, d, d) for k, prov, d in ae],
        "submission_id string, record_key string, provider string, ARRIVALDATE date, "
        "activity_date date",
    )
    links = sorted({("gp", r.key, r.person) for r in regs}) + [
        ("hes_apc", k, p) for k, p, *_ in apc
    ]
    write(
        LINK_MAP,
        [(s, k, p, "test" if p else None) for s, k, p in links],
        "source string, record_key string, person_id string, match_step string",
    )
    store.write(_ledger(spark, runs), table_path(str(root), SUBMISSIONS))
    return Built(root, regs, events, [(k, p, adm, diag) for k, p, _, adm, _, diag, *_ in apc], ae)


@dataclass(frozen=True)
class Published:
    result: object
    out: Path
    store: DeltaStore


@pytest.fixture(scope="module")
def published(spark: SparkSession, built: Built) -> Published:
    out = built.root.parent / "site"
    store = open_store(spark)
    result = publish(spark, store, str(built.root), out, REFERENCE)
    return Published(result, out, store)


def green_table(p: Published, built: Built, name: str) -> DataFrame:
    return p.store.read(table_path(str(built.root), green(name)))


# --- sources -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(spark: SparkSession, built: Built) -> dict[str, pd.DataFrame]:
    """Every source frame, collected once (a few hundred rows each)."""
    pub = load_publication()
    wh = Warehouse(open_store(spark), str(built.root))
    return {
        name: source(wh, REFERENCE, pub.sources, readers(pub, name)).toPandas()
        for name, source in SOURCES.items()
    }


def readers(pub: Publication, source: str) -> list[TableDefinition]:
    return [table for table in pub.tables.values() if table.source == source]


def test_registered_people_one_row_each_at_their_latest_current_registration(
    sources: dict[str, pd.DataFrame], built: Built
) -> None:
    people = sources["gp_registered"].drop(columns="snomed_code").drop_duplicates()
    assert people["person_id"].is_unique
    assert {"gone", "resent"}.isdisjoint(people["person_id"])
    mover = people.set_index("person_id").loc["mover"]
    assert (mover["practice"], mover["district"], mover["area"]) == ("B82002", "M1", "M")
    assert mover["age_band"] == "45-49"  # 40 at registration in 2020, five years on
    own = people[people["person_id"] == "gp:B82002/unlinked"]
    assert own[["sex", "age_band"]].values.tolist() == [["Female", "70-74"]]
    expected = {r.person or f"gp:{r.key}" for r in built.registrations} - {"gone", "resent"}
    assert set(people["person_id"]) == expected


def test_a_persons_codes_come_from_all_their_registrations_up_to_the_reference_date(
    sources: dict[str, pd.DataFrame],
) -> None:
    rows = sources["gp_registered"]
    codes = set(rows[rows["person_id"] == "mover"]["snomed_code"].dropna())
    assert DIABETES in codes and HYPERTENSION not in codes


def test_gp_codes_no_table_counts_are_left_out_and_nobody_with_them(
    spark: SparkSession, built: Built
) -> None:
    pub = load_publication()
    wh = Warehouse(open_store(spark), str(built.root))
    diabetes = pub.tables["diabetes_by_area_age_sex"]
    kept = gp_registered(wh, REFERENCE, pub.sources, [diabetes]).toPandas()
    # counting records, or broken down by code, a table needs every code
    for needs_all in (
        dataclasses.replace(diabetes, measure=Measure(count="records")),
        dataclasses.replace(diabetes, dimensions=[Dimension("snomed_code")], split_by=None),
    ):
        every = gp_registered(wh, REFERENCE, pub.sources, [needs_all]).toPandas()
        codes = set(every["snomed_code"].dropna())
        assert set(kept["snomed_code"].dropna()) == codes & set(diabetes.filters[0].values)
        assert len(codes) > len(set(kept["snomed_code"].dropna()))
        assert set(kept["person_id"]) == set(every["person_id"])  # without a code: one row, null


def _year_on(day: dt.date) -> dt.date:
    """Spark's add_months(day, 12): the same day a year on (29 February -> 28th)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return day.replace(year=day.year + 1, day=28)


def test_pathway_flags_linked_people_admitted_within_a_year_of_their_first_code(
    sources: dict[str, pd.DataFrame], built: Built
) -> None:
    person_of = {r.key: r.person for r in built.registrations}
    current = {r.person for r in built.registrations if r.person} - {"gone", "resent"}
    first: dict[str, dt.date] = {}
    for key, day, code in built.events:
        person = person_of[key]
        if code == DIABETES and person in current and day <= REFERENCE:
            first[person] = min(day, first.get(person, day))
    cohort = {p: d for p, d in first.items() if d <= dt.date(2024, 3, 31)}
    admitted = {
        p for _, p, day, diag in built.apc
        if p in cohort and (diag or "")[:3] in {"E10", "E11", "E12", "E13", "E14"}
        and cohort[p] <= day <= _year_on(cohort[p])
    }
    expected = pd.DataFrame(
        [(p, str(p in admitted).lower()) for p in sorted(cohort)],
        columns=["person_id", "admitted_12m"],
    )
    actual = sources["diabetes_pathway"][["person_id", "admitted_12m"]]
    assert 0 < len(admitted) < len(cohort)
    pd.testing.assert_frame_equal(actual.sort_values("person_id", ignore_index=True), expected)


def test_a_spell_of_several_episodes_is_one_admission(
    sources: dict[str, pd.DataFrame], built: Built
) -> None:
    admissions = sources["hes_apc"]
    in_period = [
        a for a in built.apc if dt.date(2024, 3, 31) < a[2] <= REFERENCE and not a[0].endswith("b")
    ]
    assert len(admissions) == len(in_period)
    assert not admissions["chapter"].str.startswith("21 ").any()  # the Z515 second episodes
    assert admissions["chapter"].isna().sum() == sum(a[3] is None for a in in_period) > 0


def test_age_bands_are_zero_padded_with_an_open_top_band(spark: SparkSession) -> None:
    sources = load_publication().sources
    assert sources is not None
    ages = spark.createDataFrame([(0,), (4,), (5,), (89,), (90,), (104,), (None,), (-1,)], "age int")
    bands = [r[0] for r in ages.select(age_band(F.col("age"), sources)).collect()]
    assert bands == ["00-04", "00-04", "05-09", "85-89", "90+", "90+", None, None]


# --- the publication ---------------------------------------------------------------------


def test_every_table_is_published_to_delta(published: Published, built: Built) -> None:
    names = set(load_publication().tables)
    assert set(published.result.published) == names
    assert published.result.refused == {}
    for name in names:
        assert green_table(published, built, name).count() > 0, name
        configuration = DeltaTable(table_path(str(built.root), green(name))).metadata().configuration
        assert configuration.items() >= ARCHIVE_PROPERTIES.items(), name  # archives: never vacuumed


def _matching(values: pd.Series, f: Filter) -> pd.Series:
    text = values.astype("string")
    if f.match == "prefix":
        return text.str.startswith(tuple(f.values)).fillna(False).astype(bool)
    return text.isin(f.values).fillna(False).astype(bool)


def true_count(records: pd.DataFrame, definition: TableDefinition, cell: pd.Series, measure: str) -> int:
    """A cell's true count straight from the source rows (an oracle independent of Spark)."""
    filters = list(definition.filters)
    if measure == COUNT and definition.rate:
        filters += definition.rate.numerator
    keep = pd.Series(True, index=records.index)
    for f in filters:
        keep &= _matching(records[f.column], f)
    for d in definition.dimensions:
        if cell[d.name] != TOTAL:
            keep &= records[d.name].fillna(UNKNOWN).astype(str) == cell[d.name]
    rows = records[keep]
    return rows[definition.measure.column].nunique() if definition.measure.count == "persons" else len(rows)


def test_published_counts_are_rounded_true_counts_and_small_ones_hidden(
    published: Published, built: Built, sources: dict[str, pd.DataFrame]
) -> None:
    """Every published cell, margins included, against its true count: 1-7 is `*`, any
    other shown count is its own true count rounded to 5 (no published value is a true
    small count)."""
    pub = load_publication()
    small = 0
    for name, definition in pub.tables.items():
        records = sources[definition.source]
        shown = green_table(published, built, name).toPandas()
        for measure in [COUNT, *(["denominator"] if definition.rate else [])]:
            for _, cell in shown.iterrows():
                true = true_count(records, definition, cell, measure)
                if 1 <= true <= pub.disclosure.max_small:
                    small += 1
                    assert cell[measure] == "*", (name, measure, dict(cell))
                elif cell[measure] != "*":
                    assert int(cell[measure]) == (true + 2) // 5 * 5, (name, measure, dict(cell))
    assert small > 100  # the warehouse really has small cells to protect


def test_ae_totals_count_attendances_in_the_period(published: Published, built: Built) -> None:
    """Rounded totals from an independent count of the fixture's rows (the old one excluded)."""
    in_period = [p for _, p, d in built.ae if d > dt.date(2024, 3, 31)]
    table = green_table(published, built, "ae_by_provider_month").where(
        F.col("month") == TOTAL
    )
    shown = {r["provider"]: r["count"] for r in table.collect()}
    for provider in ("RAA", "RBB", TOTAL):
        n = len(in_period) if provider == TOTAL else in_period.count(provider)
        assert shown[provider] == str((n + 2) // 5 * 5), provider


def test_csv_downloads_match_the_delta_tables(
    spark: SparkSession, published: Published, built: Built
) -> None:
    for name in published.result.published:
        delta = green_table(published, built, name)
        csv = spark.read.csv(str(published.out / f"{name}.csv"), header=True)
        as_text = delta.select(*(F.col(c).cast("string") for c in delta.columns))
        assert_df_equality(csv, as_text, ignore_row_order=True, ignore_nullable=True)


class Page(HTMLParser):
    """Collects links and inline SVG while checking every end tag closes its element."""

    VOID = {"meta", "br", "img", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if tag == "a" and k == "href" and v]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def test_every_page_parses_and_its_links_resolve(published: Published) -> None:
    pages = sorted(published.out.glob("*.html"))
    names = {p.stem for p in pages}
    assert names == {"index", *published.result.published}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        parser = Page()
        parser.feed(text)
        assert parser.open == [], page.name
        for link in parser.links:
            assert (published.out / link).is_file(), (page.name, link)
        if page.stem != "index":
            svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
            chart = ET.fromstring(svg)
            assert chart.tag == f"{SVG}svg" and chart.findall(f"{SVG}rect"), page.name


@pytest.mark.parametrize(
    ("day", "published_as_of"),
    [
        (dt.date(2025, 3, 31), dt.date(2025, 3, 31)),
        (dt.date(2025, 4, 15), dt.date(2025, 3, 31)),
        (dt.date(2024, 3, 1), dt.date(2024, 2, 29)),
        (dt.date(2025, 1, 30), dt.date(2024, 12, 31)),
    ],
)
def test_a_publication_covers_whole_months(day: dt.date, published_as_of: dt.date) -> None:
    assert whole_months_end(day) == published_as_of


def test_the_manifest_names_the_reference_date(published: Published) -> None:
    manifest = (published.out / MANIFEST).read_text(encoding="utf-8")
    assert '"reference_date": "2025-03-31"' in manifest
    assert not list(published.out.parent.glob(".site.*"))  # no staging left behind
    assert "Not published" not in (published.out / "index.html").read_text(encoding="utf-8")


def latest_versions(store: DeltaStore, root: Path) -> dict[str, int]:
    ledger = store.read(table_path(str(root), PUBLICATIONS))
    last = ledger.agg(F.max("publication")).first()[0]
    rows = ledger.filter((F.col("publication") == last) & (F.col("status") == "published")).collect()
    return {r["table"]: r["version"] for r in rows}


def test_the_ledger_names_the_set_the_site_shows(published: Published, built: Built) -> None:
    """Runs before the tests below publish again into the same warehouse."""
    manifest = json.loads((published.out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["publication"] == published.result.number == 1
    root = str(built.root)
    assert latest_versions(published.store, built.root) == {
        name: published.store.version(table_path(root, green(name))) for name in published.result.published
    }
    tables = latest_publication(published.store, root)
    assert set(tables) == set(published.result.published)
    for name, frame in tables.items():
        assert_df_equality(frame, green_table(published, built, name), ignore_row_order=True)
    trail = published.store.read(table_path(root, AUDIT)).filter(F.col("release_id") == "publication-1")
    started, done = sorted(trail.collect(), key=lambda r: r["at"])
    assert (started["action"], started["flow"], started["outcome"], done["outcome"]) == (
        "publication", "green", "started", "done"
    )
    assert done["rows"] == published.result.figures()["cells"] > 0 and done["reason"] is None
    assert sorted(done["fields"]) == sorted(published.result.published)


# --- refusal -----------------------------------------------------------------------------


def ae_table(*dimensions: str) -> TableDefinition:
    return TableDefinition(
        title=f"A&E by {dimensions[0]}", source="hes_ae", measure=Measure(count="records"),
        dimensions=[Dimension(d) for d in dimensions],
    )


def test_a_table_failing_its_audit_is_not_published_and_the_rest_are(
    spark: SparkSession, built: Built, tmp_path: Path
) -> None:
    """Without secondary suppression and with a wide protection rule, RCC's small count
    (about 10 attendances, some months 1-7) cannot be protected; months alone can."""
    pub = load_publication()
    strict = Publication(
        tables={"ae_by_provider_month": ae_table("provider", "month"), "ae_by_month": ae_table("month")},
        disclosure=dataclasses.replace(
            pub.disclosure, secondary=False, protection=ProtectionRule(min_width=20)
        ),
        sources=pub.sources,
    )
    store = open_store(spark)
    result = publish(spark, store, str(built.root), tmp_path / "site", REFERENCE, strict)
    assert set(result.refused) == {"ae_by_provider_month"}
    assert set(result.published) == {"ae_by_month"}
    assert list(latest_publication(store, str(built.root))) == ["ae_by_month"]  # the set the site shows
    done = store.read(table_path(str(built.root), AUDIT)).filter(
        (F.col("release_id") == f"publication-{result.number}") & (F.col("outcome") == "done")
    ).first()
    assert done["fields"] == ["ae_by_month"] and "ae_by_provider_month is not publishable" in done["reason"]
    assert (tmp_path / "site" / "ae_by_month.html").is_file()
    assert not (tmp_path / "site" / "ae_by_provider_month.html").exists()
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "Not published this time" in index and "<li>A&amp;E by provider</li>" in index
    with pytest.raises(DisclosureRisk, match="ae_by_provider_month is not publishable: provider="):
        require_all_published(result)


def test_a_publication_failing_part_way_leaves_the_last_set_the_latest(
    spark: SparkSession, built: Built, tmp_path: Path
) -> None:
    """The first table is written, the second fails: readers of the ledger still get the
    last complete publication, whose version of the first table differs from the new one."""
    pub = load_publication()
    publication = lambda **tables: Publication(tables, pub.disclosure, pub.sources)  # noqa: E731
    store, root = open_store(spark), str(built.root)
    publish(spark, store, root, tmp_path / "first", REFERENCE, publication(ae_by_month=ae_table("month")))
    before = latest_versions(store, built.root)
    before_number = store.read(table_path(root, PUBLICATIONS)).agg(F.max("publication")).first()[0]
    broken = publication(ae_by_month=ae_table("month"), ae_broken=ae_table("no_such_column"))
    with pytest.raises(UsageError, match="no_such_column"):
        publish(spark, store, root, tmp_path / "site", REFERENCE, broken)
    assert latest_versions(store, built.root) == before
    assert store.version(table_path(root, green("ae_by_month"))) > before["ae_by_month"]
    assert not (tmp_path / "site").exists()
    assert list(latest_publication(store, root)) == ["ae_by_month"]
    failed = store.read(table_path(root, AUDIT)).filter(F.col("outcome") == "failed").collect()
    assert [(r["action"], r["release_id"]) for r in failed] == [("publication", f"publication-{before_number + 1}")]
    assert "no_such_column" in failed[0]["reason"]


def test_monthly_publications_are_protected_together(
    spark: SparkSession, built: Built, tmp_path: Path
) -> None:
    """A month two publications both cover is shown the same in both, the two attacked
    together give nothing away, and a publication that failed part-way leaves no cells."""
    pub = load_publication()
    rolling = Publication({"ae_rolling": pub.tables["ae_by_provider_month"]}, pub.disclosure, pub.sources)
    store, root = open_store(spark), str(built.root)
    first = publish(spark, store, root, tmp_path / "a", dt.date(2025, 2, 28), rolling)
    second = publish(spark, store, root, tmp_path / "b", REFERENCE, rolling)
    tables = [
        store.read(table_path(root, green("ae_rolling")), version=r.versions["ae_rolling"]).toPandas()
        for r in (first, second)
    ]
    months = tables[0].merge(tables[1], on=["provider", "month"])
    months = months[months["month"] != TOTAL]
    assert len(months) >= 11 * 3  # 2024-04 .. 2025-02: RAA, RBB and the total, RCC some months
    assert (months["count_x"] == months["count_y"]).all()
    assert (months["count_x"] == "*").any()

    broken = Publication(
        {"ae_rolling": pub.tables["ae_by_provider_month"], "ae_broken": ae_table("no_such_column")},
        pub.disclosure, pub.sources,
    )
    with pytest.raises(UsageError, match="no_such_column"):
        publish(spark, store, root, tmp_path / "c", REFERENCE, broken)
    third = publish(spark, store, root, tmp_path / "c", REFERENCE, rolling)
    cells = store.read(table_path(root, publication_cells("ae_rolling"))).toPandas()
    assert set(cells["publication"]) == {first.number, second.number, third.number}
    assert not cells.duplicated(["publication", "provider", "month", "measure"]).any()
    shape = TableShape.of(pub.tables["ae_by_provider_month"])
    attack = audit_with_history(cells, shape, pub.disclosure.protection, third.number, exact=True)
    assert len(attack) > 0 and attack["protected"].all()


def test_default_output_is_beside_the_warehouse() -> None:
    assert default_out("/data/wh/") == "/data/publication"
    assert default_out("wh") == "./publication"


def test_cli_refuses_a_bad_reference_date(built: Built) -> None:
    assert main(["--warehouse", str(built.root), "publish", "--date", "31/03/2025"]) == 2
