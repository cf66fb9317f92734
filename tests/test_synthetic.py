"""Synthetic landing zone and ground truth: contract, determinism, identifiers, noise rates.

One 50,000-person run (module fixture) serves the statistical tests; GP consultations are
scaled down there (they are most of the rows and no test below counts them), everything
else is `conf/synth.yaml` as shipped. Determinism runs are small but use many submitters,
so a different split of the work would show.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.cli import main as caredata
from caredata_spark.config import ConfigError
from caredata_spark.contract import DATASETS
from caredata_spark.envelope import decrypt_stream
from caredata_spark.keys import TransportPrivateKey
from caredata_spark.storage import open_store
from caredata_spark.synthetic.catalogues import load_code_lists, verhoeff_valid
from caredata_spark.synthetic.generate import TRUTH_PEOPLE, TRUTH_RECORDS, SynthResult, generate
from caredata_spark.synthetic.sampling import constant_at
from caredata_spark.synthetic.settings import SynthSettings, load_synth_settings
from caredata_spark.synthetic.writer import EXTRA_COLUMN

PEOPLE = 50_000
SEED = 2014
FAST = {"activity": {"gp_events": {"rate": 1.0}}}
SMALL = {"population": {"people_per_practice": 60, "people_per_provider": 60}}
HES = ("hes_apc", "hes_op", "hes_ae")
FILE_NAME = re.compile(r"^(?P<dataset>[a-z_]+)_(?P<submitter>[A-Z0-9]+)_(?P<start>\d{8})-(?P<end>\d{8})\.(csv|parquet|csv\.enc)$")


@dataclass(frozen=True)
class Run:
    result: SynthResult
    settings: SynthSettings
    landing: Path
    truth: Path


def synth(spark: SparkSession, root: Path, overrides: dict | None = None, parallelism: int | None = None, **options) -> Run:
    settings = load_synth_settings(overrides or {}, **options)
    landing, truth = root / "landing", root / "truth"
    result = generate(spark, open_store(spark), settings, str(landing), str(truth), parallelism=parallelism)
    return Run(result, settings, landing, truth)


@pytest.fixture(scope="module")
def run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return synth(spark, tmp_path_factory.mktemp("synth"), FAST, people=PEOPLE, seed=SEED)


@pytest.fixture(scope="module")
def records(spark: SparkSession, run: Run) -> DataFrame:
    return open_store(spark).read(str(run.truth / TRUTH_RECORDS)).cache()


@pytest.fixture(scope="module")
def people(spark: SparkSession, run: Run) -> DataFrame:
    return open_store(spark).read(str(run.truth / TRUTH_PEOPLE)).cache()


def landing_files(landing: Path) -> dict[str, bytes]:
    return {str(p.relative_to(landing)): p.read_bytes() for p in sorted(landing.rglob("*")) if p.is_file()}


# --- Layout and contract ---------------------------------------------------------------------


def test_layout_is_one_file_per_dataset_and_submitter(run: Run) -> None:
    files = [p.relative_to(run.landing) for p in run.landing.rglob("*") if p.is_file()]
    period = f"{run.settings.start:%Y%m%d}-{run.settings.end:%Y%m%d}"
    by_dataset = Counter()
    for path in files:
        dataset, submitter, name = path.parts
        match = FILE_NAME.match(name)
        assert match, name
        assert (match["dataset"], match["submitter"]) == (dataset, submitter)
        assert f"{match['start']}-{match['end']}" == period
        pattern = r"[A-Z]\d{5}" if dataset.startswith("gp_") else r"R[A-Z][A-Z0-9]"
        assert re.fullmatch(pattern, submitter), submitter
        by_dataset[dataset] += 1
    assert set(by_dataset) == set(DATASETS)
    assert by_dataset["gp_patients"] == by_dataset["gp_events"] == run.result.practices
    assert all(by_dataset[d] == run.result.providers for d in HES)
    assert len(files) == run.result.files
    assert not list(run.landing.glob("_synth_staging_*")), "staging folder left behind"


def test_rows_have_the_contract_columns_and_only_flagged_rows_break_the_format(run: Run, records: DataFrame) -> None:
    """Every file's header is the contract's columns (any order, maybe one extra column);
    a row's field count differs from its header exactly when the truth says so."""
    broken = {
        (r["file"], r["row_number"]): r["dirty"]
        for r in records.where(F.col("dirty").isin("extra_field", "missing_field", "truncated")).collect()
    }
    orders, seen_broken = set(), {}
    for path in sorted(run.landing.rglob("*.csv")):
        relative = str(path.relative_to(run.landing))
        dataset = path.parts[-3]
        text = path.read_text(encoding="utf-8")
        header, *rows = list(csv.reader(io.StringIO(text)))
        assert set(header) - {EXTRA_COLUMN} == set(DATASETS[dataset].columns), relative
        orders.add((dataset, tuple(header)))
        for number, row in enumerate(rows, start=1):
            if len(row) != len(header):
                seen_broken[(relative, number)] = "extra_field" if len(row) > len(header) else "short"
        if not text.endswith("\n"):
            assert broken.get((relative, len(rows))) == "truncated", relative
    assert {k for k, v in broken.items() if v != "truncated"} <= set(seen_broken)
    for key, kind in seen_broken.items():
        assert broken.get(key) in ({"extra_field"} if kind == "extra_field" else {"missing_field", "truncated"})
    assert len(orders) > len(DATASETS), "every submitter uses the contract's column order"


def test_truth_covers_every_record_key(run: Run, records: DataFrame) -> None:
    """Every data row of every file has a truth row (same file and row number); where the
    row is well formed, its record key is the truth's."""
    truth = {(r["file"], r["row_number"]): r["record_key"] for r in records.select("file", "row_number", "record_key").collect()}
    rows = 0
    for path in sorted(run.landing.rglob("*.csv")):
        relative = str(path.relative_to(run.landing))
        key_columns = DATASETS[path.parts[-3]].key
        header, *lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        for number, line in enumerate(lines, start=1):
            assert (relative, number) in truth
            if len(line) == len(header):
                fields = dict(zip(header, line))
                assert truth[(relative, number)] == "/".join(fields[c] for c in key_columns)
        rows += len(lines)
    assert rows == len(truth) == sum(run.result.rows.values())


def test_record_keys_are_unique_per_dataset(records: DataFrame) -> None:
    hes = records.where(F.col("dataset").isin(*HES))
    assert hes.select("dataset", "record_key").distinct().count() == hes.count()
    patients = records.where(F.col("dataset") == "gp_patients")
    assert patients.select("record_key").distinct().count() == patients.count()
    events = records.where(F.col("dataset") == "gp_events").select("record_key").distinct()
    assert events.join(patients, "record_key", "left_anti").count() == 0, "GP events of unknown patients"


# --- People ----------------------------------------------------------------------------------


def modulus_11_valid(number: str) -> bool:
    if not re.fullmatch(r"\d{10}", number):
        return False
    check = 11 - sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1))) % 11
    return check != 10 and (0 if check == 11 else check) == int(number[9])


def test_nhs_numbers_are_valid_distinct_and_never_placeholders(people: DataFrame) -> None:
    numbers = [r["nhs_number"] for r in people.select("nhs_number").collect()]
    assert len(numbers) == PEOPLE == len(set(numbers))
    assert all(modulus_11_valid(n) for n in numbers)
    assert not [n for n in numbers if len(set(n)) == 1 or n.startswith("999")]


@pytest.mark.parametrize(
    "values",
    [["E11", "I10", 'a "quoted", comma', "é"], [0.1, 1 / 3, 2.5e-300], [4, 6, 7], [1, 2**40], [True, False]],
)
def test_constant_lookup_gives_what_a_literal_array_gives(spark: SparkSession, values: list) -> None:
    positions = spark.range(1, len(values) + 1).select(F.col("id").cast("int").alias("at"))
    looked_up = positions.select("at", constant_at(values, F.col("at")).alias("value"))
    literal = positions.select("at", F.element_at(F.lit(values), F.col("at")).alias("value"))
    assert_df_equality(looked_up, literal, ignore_row_order=True, ignore_nullable=True)


def test_reference_numbers_of_the_checker() -> None:
    assert modulus_11_valid("9434765919") and not modulus_11_valid("9876544321")


def test_population_looks_like_england(people: DataFrame, run: Run) -> None:
    end = run.settings.end
    stats = people.select(
        F.avg((F.col("sex") == "2").cast("int")).alias("female"),
        F.avg((F.months_between(F.lit(end), "dob") / 12 >= 65).cast("int")).alias("over_65"),
        F.avg((F.months_between(F.lit(end), "dob") / 12 < 16).cast("int")).alias("under_16"),
        F.countDistinct("postcode").alias("postcodes"),
        F.countDistinct("area").alias("areas"),
        F.count("twin_of").alias("twins"),
        F.avg(F.col("previous_practice_code").isNotNull().cast("int")).alias("two_practices"),
    ).first()
    assert 0.49 < stats["female"] < 0.53
    assert 0.16 < stats["over_65"] < 0.22  # England 2021: 18.4%
    assert 0.16 < stats["under_16"] < 0.21  # 18.6%
    assert stats["postcodes"] < PEOPLE / 20, "people should share postcodes"
    assert stats["areas"] >= 4
    assert 0.005 < stats["twins"] / PEOPLE < 0.02
    assert stats["two_practices"] > 0.05, "movers between practices need an old registration"


def test_twins_share_birth_date_and_address_but_not_nhs_number(people: DataFrame) -> None:
    pairs = people.alias("t").join(people.alias("a"), F.col("t.twin_of") == F.col("a.person_id"), "inner")
    rows = pairs.select(
        (F.col("t.dob") == F.col("a.dob")).alias("dob"),
        (F.col("t.postcode") == F.col("a.postcode")).alias("postcode"),
        (F.col("t.sex") == F.col("a.sex")).alias("sex"),
        (F.col("t.nhs_number") != F.col("a.nhs_number")).alias("nhs"),
    ).collect()
    assert rows and all(r["dob"] and r["postcode"] and r["nhs"] for r in rows)
    assert 0.5 < sum(r["sex"] for r in rows) / len(rows) < 0.95


def test_diabetes_and_hypertension_rise_with_age(people: DataFrame, run: Run) -> None:
    age = F.floor(F.months_between(F.lit(run.settings.end), "dob") / 12)
    by_age = {
        r["old"]: r
        for r in people.groupBy((age >= 65).alias("old"))
        .agg(
            F.avg(F.array_contains("conditions", "diabetes").cast("int")).alias("diabetes"),
            F.avg(F.array_contains("conditions", "hypertension").cast("int")).alias("hypertension"),
        )
        .collect()
    }
    assert by_age[True]["diabetes"] > 2 * by_age[False]["diabetes"]
    assert by_age[True]["hypertension"] > 2 * by_age[False]["hypertension"]


# --- Rates -----------------------------------------------------------------------------------


def within(observed: int, trials: int, rate: float, sigmas: float = 5.0) -> bool:
    """Binomial count within `sigmas` standard deviations (plus one) of its expectation."""
    expected = trials * rate
    return abs(observed - expected) <= sigmas * math.sqrt(trials * rate * (1 - rate)) + 1


def test_hospital_activity_rates_are_englands(records: DataFrame, run: Run) -> None:
    counts = {r["dataset"]: r["count"] for r in records.groupBy("dataset").count().collect()}
    person_years = PEOPLE * run.settings.years
    for dataset in HES:
        rate = getattr(run.settings.activity, dataset).rate
        assert abs(counts[dataset] / person_years - rate) < 0.12 * rate, dataset


def test_identifier_noise_rates_match_the_configuration(records: DataFrame, people: DataFrame, run: Run) -> None:
    """Each kind's share among the records it can apply to, within binomial tolerance."""
    eligible = {
        "dob_swap": (F.dayofmonth("dob") <= 12) & (F.dayofmonth("dob") != F.month("dob")),
        "postcode_stale": F.col("moved_on").isNull(),  # non-movers always have an older address
    }
    joined = records.join(people.select("person_id", "dob", "moved_on"), "person_id", "inner")
    for dataset, rates in [(d, getattr(run.settings.noise, d)) for d in HES] + [("gp_patients", run.settings.noise.gp)]:
        rows = joined.where(F.col("dataset") == dataset)
        for prefix in ("nhs", "dob", "sex", "postcode"):
            for kind, rate in rates.kinds(prefix).items():
                scope = rows.where(eligible[kind]) if kind in eligible else rows
                stats = scope.agg(F.count(F.lit(1)).alias("n"), F.sum(F.array_contains("noise", kind).cast("int")).alias("k")).first()
                assert within(stats["k"] or 0, stats["n"], rate), (dataset, kind, stats["k"], stats["n"], rate)


def test_dirty_rows_match_the_configuration(records: DataFrame, run: Run) -> None:
    for dataset in DATASETS:
        rates = getattr(run.settings.dirty, dataset)
        rows = records.where(F.col("dataset") == dataset)
        n = rows.count()
        observed = dict(rows.groupBy("dirty").count().collect())
        for kind, rate in rates.kinds().items():
            if kind == "short_nhs":
                continue  # only rows that carry an NHS number can lose a digit
            assert within(observed.get(kind, 0), n, rate), (dataset, kind, observed.get(kind, 0), n)
        assert 0.003 < sum(v for k, v in observed.items() if k) / n < 0.03, dataset


def test_objection_codes_reach_the_gp_files(records: DataFrame, people: DataFrame, run: Run) -> None:
    """A type 1 objector's current practice sends the dissent code, and the truth's
    in-force share is the configured dissent rate less withdrawals."""
    config = run.settings.objections
    share = people.agg(F.avg(F.col("type1_objection").cast("int"))).first()[0]
    assert within(round(share * PEOPLE), PEOPLE, config.type1 * (1 - config.withdrawn))
    objector = people.where("type1_objection").select("practice_code", "person_id").first()
    key_rows = records.where((F.col("dataset") == "gp_events") & (F.col("person_id") == objector["person_id"]))
    files = {r["file"] for r in key_rows.collect()}
    text = "".join((run.landing / f).read_text() for f in files if objector["practice_code"] in f)
    assert "827241000000103" in text


# --- Determinism -----------------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_split_and_another_seed_differs(spark: SparkSession, tmp_path: Path) -> None:
    first = synth(spark, tmp_path / "a", SMALL, people=1_500, seed=7, parallelism=2)
    again = synth(spark, tmp_path / "b", SMALL, people=1_500, seed=7, parallelism=7)
    other = synth(spark, tmp_path / "c", SMALL, people=1_500, seed=8, parallelism=2)
    a, b, c = (landing_files(r.landing) for r in (first, again, other))
    assert first.result.files > 10, "need many submitters for the split to matter"
    assert a == b
    shared = a.keys() & c.keys()  # a small submitter may have no rows, so no file, under one seed
    assert len(shared) > 0.9 * len(a)
    assert all(a[k] != c[k] for k in shared if a[k].count(b"\n") > 1), "a file with rows did not change with the seed"


def test_parquet_is_deterministic_and_carries_the_same_rows(spark: SparkSession, tmp_path: Path) -> None:
    first = synth(spark, tmp_path / "a", SMALL, people=600, seed=3, format="parquet", parallelism=2)
    again = synth(spark, tmp_path / "b", SMALL, people=600, seed=3, format="parquet", parallelism=5)
    assert landing_files(first.landing) == landing_files(again.landing)
    frame = spark.read.parquet(str(first.landing / "hes_ae" / "*" / "*.parquet"))
    assert set(frame.columns) - {EXTRA_COLUMN} == set(DATASETS["hes_ae"].columns)
    assert frame.count() == first.result.rows["hes_ae"]


def test_encrypted_files_decrypt_to_the_plaintext_files(spark: SparkSession, tmp_path: Path) -> None:
    key = TransportPrivateKey.from_seed(hashlib.sha256(b"test transport key").digest())
    settings = load_synth_settings({}, people=300, seed=5)
    plain = synth(spark, tmp_path / "plain", people=300, seed=5)
    sealed_landing = tmp_path / "sealed" / "landing"
    generate(spark, open_store(spark), settings, str(sealed_landing), str(tmp_path / "sealed" / "truth"), public_key=key.public_key().to_text())
    sealed = landing_files(sealed_landing)
    assert sealed and all(name.endswith(".csv.enc") for name in sealed)
    for name in sealed:
        opened = b"".join(decrypt_stream(sealed_landing / name, key))
        assert opened == (plain.landing / name.removesuffix(".enc")).read_bytes()


# --- Command and configuration ---------------------------------------------------------------


def test_command_writes_then_refuses_to_mix_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    landing, truth = tmp_path / "landing", tmp_path / "truth"
    argv = ["synth", "--landing", str(landing), "--truth", str(truth), "--people", "200", "--seed", "1"]
    assert caredata(argv) == 0
    assert '"people": 200' in capsys.readouterr().out
    before = landing_files(landing)
    assert caredata(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert landing_files(landing) == before
    assert caredata(["synth", "--landing", str(tmp_path / "x"), "--truth", str(tmp_path / "x" / "t")]) == 2


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"noise.*nhs_missing.*between 0 and 1"):
        load_synth_settings({"noise": {"hes_ae": {"nhs_missing": 1.5}}})
    with pytest.raises(ConfigError, match=r"people"):
        load_synth_settings({}, people=0)
    with pytest.raises(ConfigError, match=r"unknown field"):
        load_synth_settings({"population": {"householdsize": 3}})
    with pytest.raises(ConfigError, match=r"end_date: 2999-03-31 is in the future"):
        load_synth_settings({}, end_date="2999-03-31")  # its activity would be quarantined


def test_shipped_codes_are_well_formed() -> None:
    settings = load_synth_settings()
    lists = load_code_lists()
    snomed = [e.code for e in settings.catalogues.gp_events]
    snomed += [e.code for c in settings.conditions for e in (c.monitoring or [])]
    snomed += [code for c in settings.conditions for code in lists.snomed(c.code_list)]
    assert all(verhoeff_valid(code) for code in snomed)
    catalogues = settings.catalogues
    icd10 = [e.code for e in catalogues.apc_primary + catalogues.apc_secondary + catalogues.op_diagnoses + catalogues.ae_diagnoses]
    assert all(re.fullmatch(r"[A-Z]\d{2}[0-9X]\d?", c) for c in icd10 + [c.icd10 for c in settings.conditions])
    assert all(re.fullmatch(r"[A-Z]\d{3}", e.code) for e in catalogues.apc_operations)
