"""Splink 5 (DuckDB backend) on the same records and identifiers as our linkage.

The baseline a reviewer would ask for: the records that reached our linkage (the keys of
our link map), with their four identifiers read in clear from the synthetic landing CSVs
and cleaned as a Splink user would, linked by Splink twice — its deterministic linking
with rules equivalent to our 8 steps, and a Fellegi-Sunter model — then clustered. Both
are scored by `bench_linkage.link_quality`, exactly as ours is.

`link_type="link_only"` between GP registrations and hospital records (the three HES
datasets as one table): the figures are HES-to-GP pairs, and HES-to-HES comparisons
(quadratic in a person's episodes) would cost Splink time without adding a scored pair;
clustering still joins a person's GP registrations through the hospital records they share.

Splink is a bench-only dependency (`pip install -e '.[bench]'`), imported lazily here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

if TYPE_CHECKING:
    import duckdb
    from splink import SettingsCreator

THRESHOLD = 0.99  # match probability of a probabilistic link (predict and clustering)
U_MAX_PAIRS = 1e7  # random pairs for u, Splink's "adequate" figure
SEED = 20141
DUCKDB_MEMORY = "12GB"  # Spark's driver holds up to 8g beside it on a 24 GB machine


@dataclass(frozen=True)
class Identifiers:
    """Where a dataset keeps its key and identifiers (contract sections 1 and 2)."""

    source: str
    key: str  # SQL over the raw CSV columns
    nhs: str
    postcode: str


DATASETS = {
    "gp_patients": Identifiers("gp", "trim(PRACTICE_CODE) || '/' || trim(PATIENT_ID)", "NHS_NUMBER", "POSTCODE"),
    "hes_apc": Identifiers("hes_apc", "trim(EPIKEY)", "NEWNHSNO", "HOMEADD"),
    "hes_op": Identifiers("hes_op", "trim(ATTENDKEY)", "NEWNHSNO", "HOMEADD"),
    "hes_ae": Identifiers("hes_ae", "trim(AEKEY)", "NEWNHSNO", "HOMEADD"),
}
POSTCODE = "^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$"


def _cleaned(dataset: str, ids: Identifiers, landing: Path) -> str:
    """SELECT of one dataset's records with identifiers cleaned; invalid values are null.

    NHS number: digits only, 10 of them, not one digit repeated (placeholders). DOB: a
    date between 1895 and today. Sex: 1 or 2 (9 and 0 say unknown). Postcode: upper case,
    spaces removed, a UK postcode shape, ZZ99 pseudo-postcodes dropped, then written
    `LS1 4AB` as Splink's PostcodeComparison expects.
    """
    files = f"{landing}/{dataset}/*/*.csv"
    raw = f"""
        select '{ids.source}' as source, {ids.key} as record_key, filename,
            regexp_replace({ids.nhs}, '[^0-9]', '', 'g') as nhs,
            try_strptime(trim(DOB), '%Y-%m-%d')::date as dob, trim(SEX) as sex,
            upper(regexp_replace({ids.postcode}, '\\s', '', 'g')) as pc
        from read_csv('{files}', union_by_name = true, all_varchar = true, header = true,
                      filename = true, null_padding = true, ignore_errors = true)
    """
    return f"""
        select source, record_key, filename,
            case when length(nhs) = 10 and length(replace(nhs, left(nhs, 1), '')) > 0 then nhs end as nhs_number,
            case when dob between date '1895-01-01' and current_date then dob end as dob,
            case when sex in ('1', '2') then sex end as sex,
            case when regexp_matches(pc, '{POSTCODE}') and not starts_with(pc, 'ZZ99')
                then left(pc, length(pc) - 3) || ' ' || right(pc, 3) end as postcode
        from ({raw})
    """


def load_records(con: duckdb.DuckDBPyConnection, landing: Path, keys: Path) -> int:
    """Table `records`: one row per key of our link map, identifiers in clear; its row count.

    A key repeated across extracts keeps its latest file's row. Splink gets `gp_records`
    and `hes_records` (unique_id + identifiers; `district` for blocking).
    """
    union = " union all ".join(_cleaned(d, ids, landing) for d, ids in DATASETS.items())
    con.execute(f"""
        create or replace table records as
        select row_number() over () as unique_id, source, record_key, nhs_number, dob, sex, postcode,
            split_part(postcode, ' ', 1) as district
        from ({union}) r
        semi join read_parquet('{keys}/*.parquet') k using (source, record_key)
        qualify row_number() over (partition by source, record_key order by filename desc) = 1
    """)
    identifiers = "unique_id, nhs_number, dob, sex, postcode, district"
    con.execute(f"create or replace table gp_records as select {identifiers} from records where source = 'gp'")
    con.execute(f"create or replace table hes_records as select {identifiers} from records where source <> 'gp'")
    return con.execute("select count(*) from records").fetchall()[0][0]


NHS_NOT_CONTRADICTED = "(l.nhs_number is null or r.nhs_number is null or l.nhs_number = r.nhs_number)"


def deterministic_settings() -> SettingsCreator:
    """Our 8 steps as Splink rules: a pair satisfying any step is a link.

    det_8 (NHS number) admits every pair of det_1..det_5, and det_7 (sex, DOB, postcode, NHS
    not contradicted, DOB not 1 January) every pair of det_6, so two rules say it all.
    Splink has no "exactly one person satisfies the step" test: ambiguity is not refused.
    """
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="link_only",
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"),
            "l.sex = r.sex and l.dob = r.dob and l.postcode = r.postcode"
            f" and {NHS_NOT_CONTRADICTED} and strftime(l.dob, '%m-%d') <> '01-01'",
        ],
        retain_matching_columns=False,
    )


def _dob_comparison() -> Any:
    """DOB: exact, day and month swapped, one character off, two of year/month/day agree."""
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    ymd = [f"{part}(dob_l) = {part}(dob_r)" for part in ("year", "month", "day")]
    return CustomComparison(
        [
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.CustomLevel("strftime(dob_l, '%Y-%d-%m') = strftime(dob_r, '%Y-%m-%d')", "day/month swapped"),
            cll.CustomLevel("damerau_levenshtein(cast(dob_l as varchar), cast(dob_r as varchar)) <= 1", "one character"),
            cll.CustomLevel(f"({ymd[0]} and {ymd[1]}) or ({ymd[0]} and {ymd[2]}) or ({ymd[1]} and {ymd[2]})",
                            "two of year/month/day"),
            cll.ElseLevel(),
        ],
        output_column_name="dob",
    )


def probabilistic_settings() -> SettingsCreator:
    """Fellegi-Sunter on the four identifiers, blocked as our scored step is blocked."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.DamerauLevenshteinAtThresholds("nhs_number", [1, 2]),
            _dob_comparison(),
            cl.ExactMatch("sex"),
            cl.PostcodeComparison("postcode"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"),
            block_on("dob", "sex", "district"),
            block_on("postcode", "year(dob)"),
            block_on("substr(nhs_number, 1, 5)", "month(dob)", "day(dob)"),
            block_on("substr(nhs_number, 6, 5)", "month(dob)", "day(dob)"),
        ],
        retain_matching_columns=False,
    )


def _linker(con: duckdb.DuckDBPyConnection, settings: SettingsCreator) -> Any:
    from splink import DuckDBAPI, Linker

    db_api = DuckDBAPI(connection=con)
    tables = [db_api.register("gp_records", table_name="gp"), db_api.register("hes_records", table_name="hes")]
    return Linker(tables, settings, log_level="WARNING")


def deterministic(con: duckdb.DuckDBPyConnection) -> Any:
    """Splink's deterministic linking and connected components: the clustered table."""
    linker = _linker(con, deterministic_settings())
    return linker.clustering.cluster_pairwise_predictions_at_threshold(linker.inference.deterministic_link())


def probabilistic(con: duckdb.DuckDBPyConnection) -> Any:
    """Prior from the deterministic rules, u by random sampling, m by EM, predict, cluster."""
    from splink import block_on

    linker = _linker(con, probabilistic_settings())
    training = linker.training
    training.estimate_probability_two_random_records_match([block_on("nhs_number", "dob")], recall=0.9)
    training.estimate_u_using_random_sampling(max_pairs=U_MAX_PAIRS, seed=SEED)
    training.estimate_parameters_using_expectation_maximisation(block_on("nhs_number"))
    training.estimate_parameters_using_expectation_maximisation(block_on("dob", "postcode"))
    predictions = linker.inference.predict(threshold_match_probability=THRESHOLD)
    return linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, THRESHOLD)


def write_person_map(con: duckdb.DuckDBPyConnection, clustered: Any, target: Path) -> None:
    """(source, record_key, person_id = Splink's cluster id) as Parquet, for Spark to score."""
    con.execute(f"""
        copy (select r.source, r.record_key, c.cluster_id as person_id
              from {clustered.physical_name} c join records r using (unique_id)) to '{target}' (format parquet)
    """).fetchall()


def _timed(con: duckdb.DuckDBPyConnection, method: Any, target: Path) -> float:
    started = time.perf_counter()
    clustered = method(con)
    seconds = time.perf_counter() - started
    write_person_map(con, clustered, target)
    return seconds


def compare(spark: SparkSession, landing: Path, link_map: DataFrame, truth: DataFrame) -> dict[str, Any]:
    """Splink's deterministic and probabilistic figures on the records of `link_map`.

    `*_seconds` cover Splink's own work (register, train, predict, cluster);
    `splink_read_seconds` is reading and cleaning the CSVs, reported apart.
    """
    import duckdb

    from bench.bench_linkage import link_quality

    keys = link_map.select("source", "record_key")
    scratch = Path(tempfile.mkdtemp(prefix="splink-", dir=landing.parent))
    try:
        keys.write.parquet(str(scratch / "keys"))
        con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "temp_directory": str(scratch / "spill")})
        started = time.perf_counter()
        records = load_records(con, landing, scratch / "keys")
        figures: dict[str, Any] = {"splink_read_seconds": round(time.perf_counter() - started, 1),
                                   "splink_records": records}
        for name, method in (("splink_deterministic", deterministic), ("splink_probabilistic", probabilistic)):
            seconds = _timed(con, method, scratch / f"{name}.parquet")
            mapped = keys.join(spark.read.parquet(str(scratch / f"{name}.parquet")), ["source", "record_key"], "left")
            quality = link_quality(mapped, truth)
            figures.update({f"{name}_seconds": round(seconds, 1), **{f"{name}_{k}": v for k, v in quality.items()}})
        con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures
