"""Clinical code formats (ICD-10, OPCS-4, SNOMED CT) as built-in Spark expressions.

Codes are checked for shape (and, for SNOMED CT, the Verhoeff check digit), not looked up
in a terminology release: the platform holds no licensed code tables, and a well-formed
unknown code is still worth keeping. ICD-10 chapters come from `conf/codes.yaml`.

Code checks return null for a missing code, so an unused diagnosis position is neither
valid nor invalid; `clean_*` give the normalised code (stripped, upper case) or null.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from caredata_spark.config import CONF_DIR, ConfigError, from_mapping, read_yaml
from caredata_spark.reasons import (
    BAD_CHECK,
    BAD_FORMAT,
    SNOMED_REASONS,
    classify,
    is_blank,
    passes,
    stripped,
)

DEFAULT_CODES = CONF_DIR / "codes.yaml"

ICD10_PATTERN = r"^[A-Z][0-9]{2}[0-9A-Z]{0,2}$"  # no dot: E119, J45X, I10
ICD10_CATEGORY_PATTERN = r"^[A-Z][0-9]{2}$"
OPCS4_PATTERN = r"^[A-Z][0-9]{3}$"  # K401
# SCTID = item identifier, [namespace,] partition (2 digits), Verhoeff check digit; 6-18
# digits, no leading zero. Partition: 0x short format, 1x long format (7-digit namespace
# before it); x = 0 concept, 1 description, 2 relationship.
SNOMED_ID_PATTERN = r"^(?:[1-9][0-9]{2,14}0|[1-9][0-9]{7,14}1)[0-2][0-9]$"

# Verhoeff (1969): d is the multiplication table of the dihedral group D5, p the position
# permutations (p[i] = p[1] applied i times); a number is valid when the fold of its
# reversed digits ends at 0.
VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


# --- Reference data -------------------------------------------------------------------------


@dataclass(frozen=True)
class Icd10Chapter:
    """One ICD-10 chapter: an inclusive range of 3-character categories."""

    chapter: int
    first: str
    last: str
    label: str

    def __post_init__(self) -> None:
        for name in ("first", "last"):
            value = getattr(self, name)
            if not re.fullmatch(ICD10_CATEGORY_PATTERN, value):
                raise ConfigError(f"{name}: expected an ICD-10 category like A00, got {value!r}")
        if self.first > self.last:
            raise ConfigError(f"last: {self.last} comes before first {self.first}")
        if self.chapter < 1:
            raise ConfigError(f"chapter: expected a positive number, got {self.chapter}")
        if not self.label.strip():
            raise ConfigError("label: must not be empty")


@dataclass(frozen=True)
class Icd10Chapters:
    """The `icd10_chapters` section of `conf/codes.yaml` (other sections have other readers)."""

    icd10_chapters: list[Icd10Chapter]

    def __post_init__(self) -> None:
        chapters = self.icd10_chapters
        if not chapters:
            raise ConfigError("icd10_chapters: at least one chapter is required")
        numbers = [c.chapter for c in chapters]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            raise ConfigError(f"icd10_chapters: chapter {duplicates[0]} is listed twice")
        ordered = sorted(chapters, key=lambda c: c.first)
        for before, after in zip(ordered, ordered[1:]):
            if after.first <= before.last:
                raise ConfigError(
                    f"icd10_chapters: chapters {before.chapter} ({before.first}-{before.last})"
                    f" and {after.chapter} ({after.first}-{after.last}) overlap"
                )


def load_icd10_chapters(path: str | Path | None = None) -> list[Icd10Chapter]:
    """The validated ICD-10 chapters of `path` (default `conf/codes.yaml`).

    Errors name the file and the field, e.g. `icd10_chapters[3].first`.
    """
    codes_path = Path(path) if path else DEFAULT_CODES
    data = read_yaml(codes_path)
    if isinstance(data, dict):  # the file's other sections have their own readers
        data = {k: v for k, v in data.items() if k == "icd10_chapters"}
    try:
        return from_mapping(Icd10Chapters, data).icd10_chapters
    except ConfigError as err:
        raise ConfigError(f"{codes_path}: {err}") from None


# --- Shape checks ---------------------------------------------------------------------------


def _code(col: Column) -> Column:
    return F.upper(stripped(col))


def _code_matches(col: Column, pattern: str) -> Column:
    code = _code(col)
    return F.when(code != F.lit(""), code.rlike(pattern))


def _clean_code(col: Column, pattern: str) -> Column:
    code = _code(col)
    return F.when(code.rlike(pattern), code)


def is_icd10(col: Column) -> Column:
    """ICD-10 code without the dot (E119, J45X, I10), any case; null when missing."""
    return _code_matches(col, ICD10_PATTERN)


def clean_icd10(col: Column) -> Column:
    """The upper-case ICD-10 code when well formed, else null."""
    return _clean_code(col, ICD10_PATTERN)


def is_opcs4(col: Column) -> Column:
    """OPCS-4 code without the dot, a letter and 3 digits (K401), any case; null when missing."""
    return _code_matches(col, OPCS4_PATTERN)


def clean_opcs4(col: Column) -> Column:
    """The upper-case OPCS-4 code when well formed, else null."""
    return _clean_code(col, OPCS4_PATTERN)


def icd10_chapter(col: Column, chapters: Sequence[Icd10Chapter]) -> Column:
    """struct<chapter int, label string> of a code's chapter; null when invalid or unchaptered.

    A CASE over the (about 22) configured ranges rather than a range join: it runs in the
    same projection as the other rules, with no shuffle and no broadcast.
    """
    if not chapters:
        raise ValueError("icd10_chapter needs at least one chapter")
    category = F.substring(clean_icd10(col), 1, 3)
    (first_match, first_value), *rest = [
        (
            category.between(F.lit(c.first), F.lit(c.last)),
            F.struct(F.lit(c.chapter).alias("chapter"), F.lit(c.label).alias("label")),
        )
        for c in chapters
    ]
    result = F.when(first_match, first_value)
    for matches, value in rest:
        result = result.when(matches, value)
    return result


# --- SNOMED CT ------------------------------------------------------------------------------


def _literal_table(rows: Sequence[Sequence[int]]) -> Column:
    return F.array(*(F.array(*(F.lit(v) for v in row)) for row in rows))


def _cell(table: Column, row: Column, column: Column) -> Column:
    """table[row][column], 0-based; null (never an error) when out of range."""
    return F.try_element_at(F.try_element_at(table, row + 1), column + 1)


def _verhoeff_check(digits: Column) -> Column:
    """Fold of the reversed digits through the d and p tables: 0 when the check digit is right.

    Runs in the JVM with the tables as literal arrays; a non-digit gives null, never an error.
    """
    reversed_digits = F.transform(F.reverse(F.split(digits, "")), lambda ch: ch.try_cast("int"))
    permuted = F.transform(
        reversed_digits, lambda digit, i: _cell(_literal_table(VERHOEFF_P), i % 8, digit)
    )
    return F.aggregate(
        permuted, F.lit(0), lambda acc, digit: _cell(_literal_table(VERHOEFF_D), acc, digit)
    )


def verhoeff_valid(col: Column) -> Column:
    """Whether a digit string's last digit is its Verhoeff check digit; null when missing."""
    digits = stripped(col)
    return F.when(digits != F.lit(""), F.coalesce(_verhoeff_check(digits) == 0, F.lit(False)))


def snomed_id_status(col: Column) -> Column:
    """valid, missing, bad_format (length, leading zero, partition) or bad_check (Verhoeff)."""
    sctid = stripped(col)
    return classify(
        is_blank(sctid),
        [
            (BAD_FORMAT, ~sctid.rlike(SNOMED_ID_PATTERN)),
            (BAD_CHECK, F.coalesce(_verhoeff_check(sctid) != 0, F.lit(True))),
        ],
    )


def is_snomed_id(col: Column) -> Column:
    """A well-formed SNOMED CT identifier with a correct check digit; null when missing."""
    return F.when(~is_blank(stripped(col)), passes(snomed_id_status(col), SNOMED_REASONS))


def clean_snomed_id(col: Column) -> Column:
    """The identifier's digits when it is a valid SCTID, else null."""
    return F.when(passes(snomed_id_status(col), SNOMED_REASONS), stripped(col))
