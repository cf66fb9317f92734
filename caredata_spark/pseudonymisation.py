"""Pseudonyms of persons and records, keyed per recipient and purpose.

A pseudonym is HMAC-SHA256 under a key derived with HKDF from the pseudonym master secret,
`info` naming the recipient and the purpose (`key_info`): the same agreement gets the same
pseudonym for a person in every release, two recipients or purposes share none, and
nobody without the master secret can compute or reverse one. The HMAC runs in Spark
built-ins with the key as broadcast data (`keyed_hash`), never as a literal in a plan.

Cost: an HMAC is two `sha2` calls, so hashing every release row would run at well under
half the speed of a plain `sha2` column. Pseudonyms are therefore computed on the link
map, once per record key, before the join that every release makes anyway to learn each
record's person; a patient's hundreds of GP events share one key and so one HMAC.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.agreements import Agreement
from caredata_spark.keyed_hash import KeyFrame, derived_key_frame, keyed_hashes

PERSON = "person_pseudonym"
RECORD = "record_pseudonym"
BITS = 128  # 32 hex characters: no collision among 10^9 values in practice
LINK_COLUMNS = ("source", "record_key", "person_id")
KEY_VERSION = "caredata pseudonym v1"


def key_info(recipient: str, purpose: str) -> str:
    """HKDF `info` of a (recipient, purpose): JSON, so no two pairs encode alike.

    Whitespace in the purpose is normalised, so re-wrapping its text in the YAML does not
    change every pseudonym the recipient holds.
    """
    return json.dumps([KEY_VERSION, recipient.strip(), " ".join(purpose.split())])


def agreement_key(spark: SparkSession, master_key_file: str, agreement: Agreement) -> KeyFrame:
    info = key_info(agreement.recipient.organisation, agreement.purpose)
    return derived_key_frame(spark, master_key_file, info)


def _hex(value: Column) -> Column:
    return F.lower(F.hex(value))


def pseudonyms(key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """Link rows (source, record_key, person_id) -> plus `person_pseudonym`, `record_pseudonym`.

    The record key is hashed with its source, since keys are unique only within a source.
    A record without a person gets a null person pseudonym.
    """

    def transform(links: DataFrame) -> DataFrame:
        messages = {
            PERSON: F.col("person_id"),
            RECORD: F.concat_ws("/", F.col("source"), F.col("record_key")),
        }
        return (
            links.transform(keyed_hashes(key, messages, bits=BITS))
            .withColumn(PERSON, _hex(F.col(PERSON)))
            .withColumn(RECORD, _hex(F.col(RECORD)))
        )

    return transform
