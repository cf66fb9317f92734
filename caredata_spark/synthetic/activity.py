"""The five datasets, as the submitters would write them, with what the truth needs.

Each builder turns the population into the rows of one dataset: contract columns as text
(noise and dirt applied), `submitter`, the columns that order a file, and the truth
columns. Counts per person are rate x age/sex multiplier x frailty x years observed, so
the old and the frail use more care; everything is an expression, one explode per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.contract import DATASETS
from caredata_spark.objections import ObjectionCodes
from caredata_spark.synthetic.catalogues import Catalogue, CodeBook
from caredata_spark.synthetic.geography import Layout, practice_code, provider_code
from caredata_spark.synthetic.noise import with_dirty_rows, with_identifier_noise
from caredata_spark.synthetic.people import DAYS_PER_YEAR, OBJECTION_TYPES, condition_column, objection_columns
from caredata_spark.synthetic.sampling import Draws
from caredata_spark.synthetic.settings import Activity, SynthSettings

GP_DATASETS = ("gp_patients", "gp_events")
ROWS_PER_TASK = 2_000_000
PATIENT_ID_BITS = 32  # person ids < 2^28, so a practice-keyed permutation of 32 bits
RECORD_KEY_BITS = 39  # (person id, record number < 128) < 2^35; 39 bits print as 12 digits
RECORDS_PER_PERSON = 128


@dataclass(frozen=True)
class Rows:
    """Rows of one dataset, ready for the landing writer."""

    dataset: str
    frame: DataFrame  # contract columns, `submitter`, `order` columns, truth columns
    order: tuple[str, ...]  # sorts a submitter's rows into file order (unique per row)
    clustered: bool = False  # a submitter's rows already share one partition


@dataclass(frozen=True)
class Plan:
    """What every builder needs: settings, sizes, the seed's draws, the code book."""

    settings: SynthSettings
    layout: Layout
    draws: Draws
    book: CodeBook
    objection_codes: ObjectionCodes
    parallelism: int  # tasks the cluster runs at once

    @property
    def structural_dirt(self) -> bool:
        return self.settings.format == "csv"

    def submitters(self, dataset: str) -> int:
        return self.layout.practices if dataset in GP_DATASETS else self.layout.providers

    def partitions(self, dataset: str) -> int:
        """Tasks that write a dataset: enough to keep every core busy and tasks near
        ROWS_PER_TASK rows, never more than there are submitters (one file each)."""
        activity = self.settings.activity
        per_person_year = {
            "gp_events": activity.gp_events.rate,
            "hes_apc": activity.hes_apc.rate,
            "hes_op": activity.hes_op.rate,
            "hes_ae": activity.hes_ae.rate,
        }.get(dataset, 0.0)
        rows = self.settings.people * max(1.0, per_person_year * self.settings.years)
        wanted = max(self.parallelism, round(rows / ROWS_PER_TASK))
        return max(1, min(self.submitters(dataset), wanted))


def _text(day: Column) -> Column:
    return day.cast("string")


def rate_by_age_group(activity: Activity, settings: SynthSettings) -> list[float]:
    """Events per person-year by age group for men (women x `female`), scaled so that the
    population mean is `activity.rate` under the configured pyramid."""
    groups = settings.activity.age_groups
    total = mean = 0.0
    for band in settings.population.age_bands:
        group = max(i for i, first in enumerate(groups) if first <= band.start)
        sex_factor = band.female * activity.female + (1 - band.female)
        mean += band.share * activity.by_age[group] * sex_factor
        total += band.share
    scale = activity.rate * total / mean
    return [m * scale for m in activity.by_age]


def _expected(activity: Activity, settings: SynthSettings, years: Column) -> Column:
    rate = F.element_at(F.lit(rate_by_age_group(activity, settings)), F.col("age_group") + 1)
    sex = F.when(F.col("sex") == 2, activity.female).otherwise(1.0)
    return rate * sex * F.col("frailty") * years


def _row(dataset: str, columns: dict[str, Column], submitter: Column, key: Column) -> list[Column]:
    """Contract columns in contract order, then submitter and the truth columns."""
    missing = [c for c in DATASETS[dataset].columns if c not in columns]
    if missing:
        raise ValueError(f"{dataset}: no value for {', '.join(missing)}")
    return [
        *(columns[c].cast("string").alias(c) for c in DATASETS[dataset].columns),
        submitter.alias("submitter"),
        key.alias("record_key"),
        F.col("id").alias("person_id"),
        "noise",
        *(objection_columns(t)[2] for t in OBJECTION_TYPES),
    ]


# --- GP --------------------------------------------------------------------------------------


def registrations(people: DataFrame, plan: Plan) -> DataFrame:
    """One row per registration: current (reg 0) and, for movers, the old one (reg 1).

    GP noise is drawn per registration, so every row a practice sends about a patient
    carries the same identifiers, as a practice system would.
    """
    draws = plan.draws
    reg = F.col("reg")
    practice = F.when(reg == 0, F.col("practice")).otherwise(F.col("previous_practice"))
    return (
        people.withColumn(
            "reg",
            F.explode(
                F.when(F.col("previous_practice").isNull(), F.array(F.lit(0))).otherwise(F.array(F.lit(0), F.lit(1)))
            ),
        )
        .withColumn("practice_index", practice)
        .withColumn("practice_code", practice_code(F.col("practice_index")))
        .withColumn("patient_id", draws.key("patient_id", F.col("id"), PATIENT_ID_BITS, F.col("practice_index")).cast("string"))
        .withColumn("true_postcode", F.when(reg == 0, F.col("postcode")).otherwise(F.col("previous_postcode")))
        .withColumn("stale_postcode", F.when(reg == 0, F.col("previous_postcode")))
        .withColumn("reg_date", F.when(reg == 0, F.col("registered_on")).otherwise(F.col("previous_registered_on")))
        .withColumn("dereg_date", F.when(reg == 1, F.col("moved_on")))
        .transform(with_identifier_noise(plan.settings.noise.gp, draws, "noise/gp", ["id", "reg"], plan.settings.end))
    )


def _gp_identity() -> dict[str, Column]:
    return {
        "PRACTICE_CODE": F.col("practice_code"),
        "PATIENT_ID": F.col("patient_id"),
        "NHS_NUMBER": F.col("nhs_written"),
        "DOB": F.col("dob_written"),
        "SEX": F.col("sex_written"),
        "POSTCODE": F.col("postcode_written"),
    }


def _gp_key() -> Column:
    return F.concat(F.col("practice_code"), F.lit("/"), F.col("patient_id"))


def gp_patients(regs: DataFrame, plan: Plan) -> Rows:
    columns = {
        **_gp_identity(),
        "REG_DATE": _text(F.col("reg_date")),
        "DEREG_DATE": _text(F.col("dereg_date")),
    }
    frame = (
        regs.select(*_row("gp_patients", columns, F.col("practice_code"), _gp_key()), "reg")
        .transform(with_dirty_rows("gp_patients", plan.settings.dirty.gp_patients, plan.structural_dirt, plan.draws, ["person_id", "reg"]))
        .drop("reg")
    )
    return Rows("gp_patients", frame, ("PATIENT_ID",), clustered=True)


def gp_events(regs: DataFrame, plan: Plan) -> Rows:
    """Consultations, observations and condition reviews in the registration's part of the
    period, then objection codes (any date: the latest code decides, so history matters).

    One explode per registration: positions 1..n_clinical are drawn from the catalogue,
    the positions after them are the registration's objection codes.
    """
    settings, draws, book = plan.settings, plan.draws, plan.book
    start, end = F.lit(settings.start), F.lit(settings.end)
    first = F.greatest(start, F.col("reg_date"))
    last = F.least(end, F.coalesce(F.date_sub(F.col("dereg_date"), 1), end))
    days = F.greatest(F.datediff(last, first) + 1, F.lit(0))
    years = days / DAYS_PER_YEAR
    person, reg, seq = F.col("id"), F.col("reg"), F.col("seq")
    counts = {"n_routine": draws.count("gp/routine", person, reg, mean=_expected(settings.activity.gp_events, settings, years))}
    for condition in settings.conditions:
        mean = F.when(F.col(condition_column(condition.name)), condition.events_per_year * years).otherwise(0.0)
        counts[f"n_{condition.name}"] = draws.count(f"gp/{condition.name}", person, reg, mean=mean)
    stratum = F.when(seq <= F.col("n_routine"), book.strata.index(F.col("band"), F.col("sex")))
    bound = F.col("n_routine")
    for position, condition in enumerate(settings.conditions):
        bound = bound + F.col(f"n_{condition.name}")
        stratum = stratum.when(seq <= bound, F.lit(book.condition_stratum(position)))
    keys = (person, reg, seq)
    clinical = F.col("objection").isNull()
    code_index = F.col("code_index")
    events = (
        regs.withColumns({"first_day": first, "days": days, "held": _objection_events(plan.objection_codes), **counts})
        .withColumn("n_clinical", sum((F.col(c) for c in counts), F.lit(0)))
        .withColumn("n_events", F.col("n_clinical") + F.size("held"))
        .where(F.col("n_events") > 0)
        .withColumn("seq", F.explode(F.sequence(F.lit(1), F.col("n_events"))))
        .withColumn("objection", F.when(seq > F.col("n_clinical"), F.try_element_at("held", seq - F.col("n_clinical"))))
        .withColumn("code_index", F.when(clinical, book.gp_events.index(draws, "gp/code", *keys, stratum=stratum)))
        .withColumns(
            {
                "event_day": F.coalesce(
                    F.col("objection.day"),
                    F.date_add(F.col("first_day"), draws.below("gp/date", *keys, n=F.col("days"))),
                ),
                "snomed_code": F.coalesce(F.col("objection.code"), book.gp_events.code_at(code_index)),
                "value": F.when(clinical, book.gp_events.value_at(code_index, draws.normal("gp/value", *keys))),
            }
        )
    )
    columns = {
        **_gp_identity(),
        "EVENT_DATE": _text(F.col("event_day")),
        "SNOMED_CODE": F.col("snomed_code"),
        "VALUE": F.col("value"),
    }
    frame = (
        events.select(*_row("gp_events", columns, F.col("practice_code"), _gp_key()), "event_day", "seq", "reg")
        .transform(with_dirty_rows("gp_events", plan.settings.dirty.gp_events, plan.structural_dirt, draws, ["person_id", "reg", "seq"]))
        .drop("reg")
    )
    return Rows("gp_events", frame, ("PATIENT_ID", "event_day", "seq"), clustered=True)


def _objection_events(codes: ObjectionCodes) -> Column:
    """A registration's objection codes as (code, day) structs: the first configured code
    of each kind. The current practice holds them all (GP2GP moves the record with the
    patient); an old practice only those coded before the patient left."""
    events = []
    for objection_type in OBJECTION_TYPES:
        dissent_on, withdrawn_on, _ = objection_columns(objection_type)
        type_codes = getattr(codes, f"type{objection_type}")
        events += [
            F.struct(F.lit(type_codes.dissent[0]).alias("code"), F.col(dissent_on).alias("day")),
            F.struct(F.lit(type_codes.withdrawn[0]).alias("code"), F.col(withdrawn_on).alias("day")),
        ]
    return F.filter(
        F.array(*events),
        lambda e: e["day"].isNotNull() & ((F.col("reg") == 0) | (e["day"] < F.col("dereg_date"))),
    )


# --- Hospital ----------------------------------------------------------------------------------


def _hospital_records(people: DataFrame, dataset: str, activity: Activity, plan: Plan) -> DataFrame:
    """One row per record: date, provider, record key and noisy identifiers.

    A record before a mover's move carries the address of the time; the provider is the
    home patch's, or another one for out-of-area care.
    """
    settings, draws, layout = plan.settings, plan.draws, plan.layout
    first = F.greatest(F.lit(settings.start), F.col("dob"))
    days = F.datediff(F.lit(settings.end), first) + 1
    count = F.least(
        F.lit(RECORDS_PER_PERSON),
        draws.count(f"{dataset}/count", F.col("id"), mean=_expected(activity, settings, days / DAYS_PER_YEAR)),
    )
    keys = (F.col("id"), F.col("seq"))
    before_move = F.coalesce(F.col("record_date") < F.col("moved_on"), F.lit(False))
    home = F.when(before_move, F.col("previous_provider")).otherwise(F.col("provider"))
    provider = F.when(
        draws.uniform(f"{dataset}/away", *keys) < settings.population.out_of_area_care,
        draws.below(f"{dataset}/away/provider", *keys, n=layout.providers),
    ).otherwise(home)
    key = draws.key(f"{dataset}/key", F.col("id") * RECORDS_PER_PERSON + F.col("seq"), RECORD_KEY_BITS)
    return (
        people.withColumn("first_day", first)
        .withColumn("days", days)
        .withColumn("n_records", count)
        .where(F.col("n_records") > 0)
        .withColumn("seq", F.explode(F.sequence(F.lit(0), F.col("n_records") - 1)))
        .withColumn("record_date", F.date_add(F.col("first_day"), draws.below(f"{dataset}/date", *keys, n=F.col("days")).cast("int")))
        .withColumn("true_postcode", F.when(before_move, F.col("previous_postcode")).otherwise(F.col("postcode")))
        .withColumn("stale_postcode", F.when(~before_move, F.col("previous_postcode")))
        .withColumn("procode", provider_code(provider))
        .withColumn("record_key", F.lpad(key.cast("string"), 12, "0"))
        .withColumn("stratum", plan.book.strata.index(F.col("band"), F.col("sex")))
        .transform(with_identifier_noise(getattr(settings.noise, dataset), draws, f"noise/{dataset}", ["id", "seq"], settings.end))
    )


def _hes_identity() -> dict[str, Column]:
    return {
        "PROCODE": F.col("procode"),
        "NEWNHSNO": F.col("nhs_written"),
        "DOB": F.col("dob_written"),
        "SEX": F.col("sex_written"),
        "HOMEADD": F.col("postcode_written"),
    }


def _hospital_rows(dataset: str, records: DataFrame, columns: dict[str, Column], plan: Plan) -> Rows:
    key_column = DATASETS[dataset].key[0]
    frame = (
        records.select(*_row(dataset, {key_column: F.col("record_key"), **_hes_identity(), **columns}, F.col("procode"), F.col("record_key")), "seq")
        .transform(with_dirty_rows(dataset, getattr(plan.settings.dirty, dataset), plan.structural_dirt, plan.draws, ["person_id", "seq"]))
        .drop("seq")
    )
    return Rows(dataset, frame, ("record_key",))


def _codes(draws_per_row: int, pick, count: Column) -> Column:
    """`count` distinct codes from up to `draws_per_row` draws of `pick(i)`."""
    drawn = F.transform(F.sequence(F.lit(1), F.lit(draws_per_row)), pick)
    return F.slice(F.array_distinct(drawn), 1, count)


def hes_apc(people: DataFrame, plan: Plan) -> Rows:
    """Admitted care episodes: admission method, stay, diagnoses (the person's long-term
    conditions among the secondaries) and operations."""
    settings, draws, book = plan.settings, plan.draws, plan.book
    hospital = settings.hospital
    keys = (F.col("id"), F.col("seq"))
    stratum = F.col("stratum")
    elective = F.col("ADMIMETH").startswith("1")
    age_factor = 1 + F.col("age") / 60
    stay = F.when(elective & (draws.uniform("hes_apc/day_case", *keys) < 0.5), F.lit(0)).otherwise(
        F.floor(draws.exponential("hes_apc/stay", *keys, mean=F.when(elective, hospital.elective_stay_days).otherwise(hospital.emergency_stay_days) * age_factor))
    )
    episode_end = F.date_add(F.col("record_date"), stay.cast("int"))
    finished = F.when(episode_end <= F.lit(settings.end), episode_end)
    conditions = F.filter(
        F.array(*(F.when(F.col(condition_column(c.name)), F.lit(c.icd10)) for c in settings.conditions)),
        lambda code: code.isNotNull(),
    )
    secondary = _codes(
        hospital.apc_max_diagnoses,
        lambda i: book.apc_secondary.draw(draws, "hes_apc/secondary", *keys, i, stratum=stratum),
        F.least(F.lit(hospital.apc_max_diagnoses - 1), F.floor(draws.uniform("hes_apc/n_secondary", *keys) * (1 + F.col("age") / 12)).cast("int")),
    )
    diagnoses = F.slice(F.array_distinct(F.concat(F.array(book.apc_primary.draw(draws, "hes_apc/primary", *keys, stratum=stratum)), conditions, secondary)), 1, hospital.apc_max_diagnoses)
    operated = draws.uniform("hes_apc/operated", *keys) < F.when(elective, hospital.elective_operation).otherwise(hospital.emergency_operation)
    n_operations = F.when(operated, 1 + F.floor(draws.uniform("hes_apc/n_operations", *keys) ** 3 * hospital.apc_max_operations)).otherwise(0).cast("int")
    operations = _codes(
        hospital.apc_max_operations,
        lambda i: book.apc_operations.draw(draws, "hes_apc/operation", *keys, i, stratum=stratum),
        n_operations,
    )
    records = (
        _hospital_records(people, "hes_apc", settings.activity.hes_apc, plan)
        .withColumn("ADMIMETH", book.admission_methods.draw(draws, "hes_apc/admimeth", *keys, stratum=stratum))
        .withColumn("episode_end", finished)
        .withColumn("diagnoses", diagnoses)
        .withColumn("operations", operations)
    )
    columns = {
        "ADMIDATE": _text(F.col("record_date")),
        "EPISTART": _text(F.col("record_date")),
        "EPIEND": _text(F.col("episode_end")),
        "DISDATE": _text(F.col("episode_end")),
        "ADMIMETH": F.col("ADMIMETH"),
        **{f"DIAG_{i:02d}": F.try_element_at(F.col("diagnoses"), F.lit(i)) for i in range(1, 21)},
        **{f"OPERTN_{i:02d}": F.try_element_at(F.col("operations"), F.lit(i)) for i in range(1, 25)},
    }
    return _hospital_rows("hes_apc", records, columns, plan)


def _drawn(dataset: str, what: str, catalogue: Catalogue, plan: Plan) -> Column:
    """One value of a hospital record drawn from `catalogue`, by the record's age/sex stratum."""
    return catalogue.draw(plan.draws, f"{dataset}/{what}", F.col("id"), F.col("seq"), stratum=F.col("stratum"))


def _sometimes_coded(dataset: str, share: float, catalogue: Catalogue, plan: Plan) -> Column:
    """A diagnosis on `share` of the records (outpatient and A&E coding is partial)."""
    coded = plan.draws.uniform(f"{dataset}/coded", F.col("id"), F.col("seq")) < share
    return F.when(coded, _drawn(dataset, "diagnosis", catalogue, plan))


def hes_op(people: DataFrame, plan: Plan) -> Rows:
    settings, book = plan.settings, plan.book
    columns = {
        "APPTDATE": _text(F.col("record_date")),
        "ATTENDED": _drawn("hes_op", "attended", book.op_attendance, plan),
        "TRETSPEF": _drawn("hes_op", "tretspef", book.op_specialties, plan),
        "DIAG_01": _sometimes_coded("hes_op", settings.hospital.op_diagnosis_coded, book.op_diagnoses, plan),
    }
    return _hospital_rows("hes_op", _hospital_records(people, "hes_op", settings.activity.hes_op, plan), columns, plan)


def hes_ae(people: DataFrame, plan: Plan) -> Rows:
    settings, book = plan.settings, plan.book
    columns = {
        "ARRIVALDATE": _text(F.col("record_date")),
        "AEATTENDDISP": _drawn("hes_ae", "disposal", book.ae_disposals, plan),
        "DIAG_01": _sometimes_coded("hes_ae", settings.hospital.ae_diagnosis_coded, book.ae_diagnoses, plan),
    }
    return _hospital_rows("hes_ae", _hospital_records(people, "hes_ae", settings.activity.hes_ae, plan), columns, plan)


def all_rows(people: DataFrame, plan: Plan) -> list[Rows]:
    """The five datasets. Registrations are shuffled to their practice before GP events
    are drawn, so the events (most of the rows) never cross the network."""
    regs = registrations(people, plan).repartition(plan.partitions("gp_events"), "practice_code")
    return [
        gp_patients(regs, plan),
        gp_events(regs, plan),
        hes_apc(people, plan),
        hes_op(people, plan),
        hes_ae(people, plan),
    ]

