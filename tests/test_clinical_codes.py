"""Clinical code rules on real Spark; Verhoeff against an independent plain-Python oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.clinical_codes import (
    VERHOEFF_D,
    VERHOEFF_P,
    clean_icd10,
    clean_opcs4,
    clean_snomed_id,
    icd10_chapter,
    is_icd10,
    is_opcs4,
    is_snomed_id,
    load_icd10_chapters,
    snomed_id_status,
    verhoeff_valid,
)
from caredata_spark.config import ConfigError
from caredata_spark.reasons import BAD_CHECK, BAD_FORMAT, MISSING, VALID

# The oracle derives Verhoeff's tables instead of copying them: d is the dihedral group D5
# (rotations 0-4, reflections 5-9) and p[i] is p[1] applied i times.
D5 = [
    [
        (j + k) % 5 if j < 5 and k < 5
        else (j + k) % 5 + 5 if j < 5
        else (j - k) % 5 + 5 if k < 5
        else (j - k) % 5
        for k in range(10)
    ]
    for j in range(10)
]
P = [list(range(10)), [1, 5, 7, 6, 2, 8, 3, 0, 9, 4]]
for _ in range(6):
    P.append([P[1][x] for x in P[-1]])


def oracle_valid(digits: str) -> bool:
    check = 0
    for i, ch in enumerate(reversed(digits)):
        check = D5[check][P[i % 8][int(ch)]]
    return check == 0


def with_verhoeff(payload: str) -> str:
    """`payload` and the one digit that makes it Verhoeff-valid."""
    return next(payload + d for d in "0123456789" if oracle_valid(payload + d))


def test_tables_match_the_derived_oracle() -> None:
    assert [list(row) for row in VERHOEFF_D] == D5
    assert [list(row) for row in VERHOEFF_P] == P
    assert with_verhoeff("236") == "2363"  # the textbook example


# --- SNOMED CT ------------------------------------------------------------------------------

SNOMED_ROWS = [
    ("827241000000103", VALID),  # type 1 dissent (objection_codes.md)
    ("881561000000100", VALID),  # type 2 dissent
    ("73211009", VALID),  # diabetes mellitus
    ("22271007", VALID),
    (" 73211009 ", VALID),
    (with_verhoeff("12301"), VALID),  # 6 digits, description partition
    (with_verhoeff("1" + "1000000" + "10"), VALID),  # shortest long-format id
    (with_verhoeff("123456789012345" + "00"), VALID),  # 18 digits
    ("827241000000104", BAD_CHECK),
    ("73211008", BAD_CHECK),
    (None, MISSING),
    ("", MISSING),
    ("  ", MISSING),
    (with_verhoeff("1200"), BAD_FORMAT),  # 5 digits
    (with_verhoeff("1234567890123456" + "00"), BAD_FORMAT),  # 19 digits
    (with_verhoeff("1234567" + "10"), BAD_FORMAT),  # long format without room for a namespace
    (with_verhoeff("1234" + "03"), BAD_FORMAT),  # no such partition
    ("0" + "73211009", BAD_FORMAT),  # leading zero
    ("7321100a", BAD_FORMAT),
    ("7321-1009", BAD_FORMAT),
]


def test_snomed_ids(spark: SparkSession) -> None:
    rows = [
        (
            code,
            status,
            None if status == MISSING else status == VALID,
            code.strip() if status == VALID else None,
            reasons.SNOMED_REASONS.get(status),
        )
        for code, status in SNOMED_ROWS
    ]
    df = spark.createDataFrame(
        rows, "code string, status string, valid boolean, clean string, reason string"
    )
    code = F.col("code")
    actual = df.select(
        "code",
        snomed_id_status(code).alias("status"),
        is_snomed_id(code).alias("valid"),
        clean_snomed_id(code).alias("clean"),
        reasons.reason(snomed_id_status(code), reasons.SNOMED_REASONS).alias("reason"),
    )
    assert_df_equality(actual, df, ignore_nullable=True)


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(st.text("0123456789", min_size=1, max_size=18), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_verhoeff_matches_the_oracle(spark: SparkSession, cases: list[tuple[str, bool]]) -> None:
    """Random digit strings, half completed with their check digit so both answers occur."""
    numbers = [with_verhoeff(digits[:-1]) if complete else digits for digits, complete in cases]
    rows = [(n, oracle_valid(n)) for n in numbers] + [("12a3", False), ("", None), (None, None)]
    df = spark.createDataFrame(rows, "digits string, valid boolean")
    actual = df.select("digits", verhoeff_valid(F.col("digits")).alias("valid"))
    assert_df_equality(actual, df, ignore_nullable=True)


# --- ICD-10 and OPCS-4 ----------------------------------------------------------------------


def test_icd10_codes_and_chapters(spark: SparkSession) -> None:
    chapters = load_icd10_chapters()
    label = {c.chapter: c.label for c in chapters}
    cases = [  # code, valid, clean, chapter
        ("E119", True, "E119", 4),
        ("e119", True, "E119", 4),
        (" J45X ", True, "J45X", 10),
        ("I10", True, "I10", 9),
        ("C509", True, "C509", 2),
        ("D489", True, "D489", 2),
        ("D500", True, "D500", 3),
        ("H609", True, "H609", 8),
        ("T983", True, "T983", 19),
        ("V01", True, "V01", 20),
        ("Y98", True, "Y98", 20),
        ("Z992", True, "Z992", 21),
        ("U071", True, "U071", 22),
        ("A000", True, "A000", 1),
        ("D49", True, "D49", None),  # well formed, in no chapter
        ("M8000", True, "M8000", 13),
        ("E11.9", False, None, None),
        ("E1", False, None, None),
        ("11E9", False, None, None),
        ("E11999", False, None, None),
        (None, None, None, None),
        ("", None, None, None),
        (" ", None, None, None),
    ]
    rows = [(*case, label.get(case[3])) for case in cases]
    df = spark.createDataFrame(
        rows, "code string, valid boolean, clean string, chapter int, label string"
    )
    found = icd10_chapter(F.col("code"), chapters)
    actual = df.select(
        "code",
        is_icd10(F.col("code")).alias("valid"),
        clean_icd10(F.col("code")).alias("clean"),
        found.getField("chapter").alias("chapter"),
        found.getField("label").alias("label"),
    )
    assert_df_equality(actual, df, ignore_nullable=True)


def test_opcs4_codes(spark: SparkSession) -> None:
    rows = [
        ("K401", True, "K401"),
        ("k401", True, "K401"),
        (" W381\t", True, "W381"),
        ("K40", False, None),
        ("K4011", False, None),
        ("K40.1", False, None),
        ("K40 1", False, None),
        ("4K01", False, None),
        ("K40X", False, None),
        (None, None, None),
        ("", None, None),
    ]
    df = spark.createDataFrame(rows, "code string, valid boolean, clean string")
    actual = df.select(
        "code", is_opcs4(F.col("code")).alias("valid"), clean_opcs4(F.col("code")).alias("clean")
    )
    assert_df_equality(actual, df, ignore_nullable=True)


# --- Chapter configuration ------------------------------------------------------------------


def test_default_chapters_cover_the_classification() -> None:
    chapters = load_icd10_chapters()
    assert [c.chapter for c in chapters] == list(range(1, 23))
    assert (chapters[0].first, chapters[0].last) == ("A00", "B99")


def chapter_yaml(*lines: str) -> str:
    return "other_section: {kept: for other readers}\nicd10_chapters:\n" + "\n".join(
        f"  - {line}" for line in lines
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (chapter_yaml("{chapter: 1, first: A0, last: B99, label: x}"), "icd10_chapters[0].first"),
        (chapter_yaml("{chapter: 1, first: B00, last: A99, label: x}"), "icd10_chapters[0].last"),
        (chapter_yaml("{chapter: 0, first: A00, last: B99, label: x}"), "[0].chapter"),
        (chapter_yaml("{chapter: one, first: A00, last: B99, label: x}"), "[0].chapter"),
        (chapter_yaml("{chapter: 1, first: A00, last: B99}"), "icd10_chapters[0].label"),
        (chapter_yaml("{chapter: 1, first: A00, last: B99, label: x, roman: I}"), "roman"),
        (
            chapter_yaml(
                "{chapter: 1, first: A00, last: C10, label: x}",
                "{chapter: 2, first: C00, last: D48, label: y}",
            ),
            "chapters 1 (A00-C10) and 2 (C00-D48) overlap",
        ),
        (
            chapter_yaml(
                "{chapter: 1, first: A00, last: B99, label: x}",
                "{chapter: 1, first: C00, last: D48, label: y}",
            ),
            "chapter 1 is listed twice",
        ),
        ("code_lists: {}\n", "icd10_chapters: required field is missing"),
        ("icd10_chapters: []\n", "at least one chapter"),
    ],
)
def test_bad_chapter_configuration_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "codes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_icd10_chapters(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)
