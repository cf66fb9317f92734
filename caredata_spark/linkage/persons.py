"""Persons: who exists, under which id, and the identities they are matched by.

- GP registrations define persons: every registration carrying the same valid NHS number
  is one person, whichever practice; a registration without a valid NHS number is a person
  of its own (never guessed into someone else: a wrong merge names two people).
- A hospital record whose valid NHS number belongs to no known person founds a
  hospital-only person, one per NHS number (`hes_cluster`); hospital records without one
  are then linked to persons by the steps, like any other.
- Unless that number's records link deterministically to exactly one person (a GP
  registration whose own NHS number was missing or mistyped): then that person adopts the
  number and all its records (`nhs_group`), instead of a second, hospital-only person. A
  person who holds a number (in any identity, from any run) never adopts another, and a
  person whom the records of two numbers match adopts neither: twins with the same DOB,
  sex and postcode stay two people.
- Ids are derived, not drawn: sha256 of the person's NHS number hash (already an HMAC under
  the linkage key) or of the founding GP record key. The same input gives the same ids on
  a re-run or a retried task (a random id would not), ids are made in parallel without a
  global counter, and 128 bits never collide. Existing ids are always looked up first, so an
  id, once given, never changes.

The person index (`linkage/persons`) holds one row per (person, identity signature):
the hashes each person is matched by. GP persons are matched by their registrations' hashes
(all extracts, so an old postcode still matches), hospital-only persons by their founding
records' hashes. Linked hospital records do not add identities: a wrong scored link must
not attract further records.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.linkage.deterministic import link_deterministic, person_numbers
from caredata_spark.linkage.records import GP, IDENTITY_COLUMNS

GP_REGISTRATION = "gp_registration"
HES_CLUSTER = "hes_cluster"
NHS_GROUP = "nhs_group"
ORIGIN_GP = "gp"
ORIGIN_HES = "hes"
PERSON_ID_HEX = 32  # 128 bits

PERSON_COLUMNS = ("person_id", "origin", "signature", *IDENTITY_COLUMNS, "run")


def nhs_person_id(h_nhs: Column) -> Column:
    return F.substring(F.sha2(F.concat(F.lit(b"caredata/person/nhs/"), h_nhs), 256), 1, PERSON_ID_HEX)


def record_person_id(source: str, record_key: Column) -> Column:
    prefix = F.lit(f"caredata/person/{source}/")
    return F.substring(F.sha2(F.concat(prefix, record_key), 256), 1, PERSON_ID_HEX)


def nhs_owners(persons: DataFrame) -> DataFrame:
    """(h_nhs, person_id): the person each known valid NHS number belongs to."""
    return (
        persons.filter(F.col("h_nhs").isNotNull())
        .groupBy("h_nhs")
        .agg(F.min("person_id").alias("person_id"))
    )


def register_gp(gp_rows: DataFrame, prior_links: DataFrame, owners: DataFrame) -> DataFrame:
    """(record_key, person_id, is_new) for every GP record key among `gp_rows`.

    A key linked by an earlier run keeps its person. A new key with a valid NHS number
    (several extracts may differ: the smallest hash decides, deterministically) joins the
    person owning that number, or founds the person derived from it; without one, the key
    founds its own person. Null NHS hashes never enter the join with `owners`.
    """
    keys = gp_rows.groupBy("record_key").agg(F.min("h_nhs").alias("h_nhs"))
    known = keys.join(
        prior_links.filter(F.col("source") == GP).select("record_key", "person_id"),
        on="record_key",
        how="inner",
    )
    new = keys.join(known.select("record_key"), on="record_key", how="left_anti")
    with_nhs = new.filter(F.col("h_nhs").isNotNull()).join(
        owners.withColumnRenamed("person_id", "owner"), on="h_nhs", how="left"
    )
    without_nhs = new.filter(F.col("h_nhs").isNull())
    return (
        known.select("record_key", "person_id", F.lit(False).alias("is_new"))
        .unionByName(
            with_nhs.select(
                "record_key",
                F.coalesce(F.col("owner"), nhs_person_id(F.col("h_nhs"))).alias("person_id"),
                F.lit(True).alias("is_new"),
            )
        )
        .unionByName(
            without_nhs.select(
                "record_key",
                record_person_id(GP, F.col("record_key")).alias("person_id"),
                F.lit(True).alias("is_new"),
            )
        )
    )


def gp_identities(gp_rows: DataFrame, gp_persons: DataFrame) -> DataFrame:
    """The person index rows the GP rows contribute: (person_id, signature + hashes).

    One row per (person, signature): the other columns follow from the signature, so a
    whole-row `distinct` (a hash aggregation, see `records.identities`) gives it.
    """
    return (
        gp_rows.select("record_key", "signature", *IDENTITY_COLUMNS)
        .join(gp_persons.select("record_key", "person_id"), on="record_key", how="inner")
        .select("person_id", F.lit(ORIGIN_GP).alias("origin"), "signature", *IDENTITY_COLUMNS)
        .distinct()
    )


def found_hes_persons(signatures: DataFrame, owners: DataFrame) -> DataFrame:
    """Hospital signatures whose valid NHS number no person owns: person index rows.

    Every such signature founds (or, sharing the number, joins) the hospital-only person
    derived from its NHS number.
    """
    return (
        signatures.filter(F.col("h_nhs").isNotNull())
        .join(owners.select("h_nhs"), on="h_nhs", how="left_anti")
        .select(
            nhs_person_id(F.col("h_nhs")).alias("person_id"),
            F.lit(ORIGIN_HES).alias("origin"),
            "signature",
            *IDENTITY_COLUMNS,
        )
    )


def adopted_numbers(founders: DataFrame, reference: DataFrame, broadcast_founders: bool = False) -> DataFrame:
    """(h_nhs, adopter): unowned NHS numbers whose founding signatures link deterministically
    to exactly one person of `reference` (the whole index without the founders), who is
    linked by no other unowned number and holds none.

    Only the sex, DOB and postcode steps can match here (no person owns the number), and
    they judge "the NHS number does not contradict" per person, so the adopter is a person
    without one: typically a GP registration whose number was missing or mistyped. That a
    numbered person never adopts is also checked here, against every number the index
    holds, because a person id naming two people is the one error linkage must not make.
    Two numbers matching one person are two people who look alike (twins): neither is
    adopted. Founders are a few per cent of hospital signatures: within the broadcast
    limit (`broadcast_founders`) they are broadcast and the index streams past them,
    otherwise the steps' join is a shuffle like any other.
    """
    numbers = person_numbers(reference)
    links = link_deterministic(
        founders.select("signature", *IDENTITY_COLUMNS), reference, broadcast_founders, numbers
    ).filter(F.col("person_id").isNotNull())
    matches = founders.select("signature", "h_nhs").join(
        links.select("signature", "person_id"), on="signature", how="inner"
    )
    one_number = (
        matches.groupBy("person_id")
        .agg(F.count_distinct("h_nhs").alias("numbers"))
        .filter(F.col("numbers") == 1)
    )
    return (
        matches.groupBy("h_nhs")
        .agg(F.count_distinct("person_id").alias("persons"), F.min("person_id").alias("person_id"))
        .filter(F.col("persons") == 1)
        .join(one_number.select("person_id"), on="person_id", how="left_semi")
        .join(numbers.select("person_id"), on="person_id", how="left_anti")
        .select("h_nhs", F.col("person_id").alias("adopter"))
    )


def with_adopters(adopted: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Founders -> the same rows under their adopter where their number was adopted, with the
    step that places them (`nhs_group` or `hes_cluster`). A small join on the NHS hash."""

    def transform(founders: DataFrame) -> DataFrame:
        joined = founders.join(adopted, on="h_nhs", how="left")
        return joined.select(
            F.coalesce(F.col("adopter"), F.col("person_id")).alias("person_id"),
            "origin",
            "signature",
            *IDENTITY_COLUMNS,
            F.when(F.col("adopter").isNotNull(), F.lit(NHS_GROUP)).otherwise(F.lit(HES_CLUSTER)).alias("match_step"),
        )

    return transform
