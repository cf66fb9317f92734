"""The population: who exists, where they live, where they are registered, what they have.

One row per person, computed from `spark.range(people)` by expressions only, so executors
build the population in parallel and the driver never holds it. Person `id` is the true
person id of the ground truth. Twins are pairs (2k, 2k+1): the second takes birth date and
household from the first (`anchor`), and usually the sex, so twins share DOB, sex and
postcode yet have their own NHS numbers.
"""

from __future__ import annotations

import datetime as dt
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.synthetic.catalogues import OLDEST_AGE
from caredata_spark.synthetic.geography import Layout, div, practice_code, provider_code
from caredata_spark.synthetic.sampling import Categorical, Draws, constant_at, stratum_index
from caredata_spark.synthetic.settings import SynthSettings

DAYS_PER_YEAR = 365.25
PEOPLE_PER_PARTITION = 250_000

# NHS numbers: 7-digit prefixes (first digit 4, 6 or 7: never the 999 test range) times 80
# slots of the last two body digits; see `nhs_number`.
NHS_LEADING_DIGITS = (4, 6, 7)
NHS_PREFIXES = len(NHS_LEADING_DIGITS) * 1_000_000
NHS_SLOTS = 80  # 10 eighth digits x 8 ninth digits that always give a valid number
NHS_MULTIPLIER = 1_299_709  # prime, coprime with NHS_PREFIXES: a bijection on prefixes
NHS_CAPACITY = NHS_PREFIXES * NHS_SLOTS


def _digit(number: Column, position_from_left: int, width: int) -> Column:
    return (div(number, 10 ** (width - position_from_left)) % 10).cast("int")


def modulus11_check(body: Column) -> Column:
    """Check digit of a 9-digit NHS number body: 11 - (weighted sum mod 11), 11 -> 0.

    10 means no valid number has this body; `nhs_number` never asks for one.
    """
    weighted = sum((_digit(body, i, 9) * (11 - i) for i in range(1, 10)), F.lit(0))
    check = 11 - weighted % 11
    return F.when(check == 11, F.lit(0)).otherwise(check)


def with_nhs_number(draws: Draws):
    """Add `nhs_number`: distinct, valid and never a placeholder, for ids < NHS_CAPACITY.

    Person p has prefix group p div 80, mapped bijectively onto 3M 7-digit prefixes, and
    slot p mod 80 = (eighth digit, k). The ninth digit is the k-th of 0..9 once two digits
    are skipped: the one whose check digit would be 10 (at most one, as 2 is invertible
    mod 11), and the one that would make all nine digits equal (a placeholder). So every
    slot gives a valid number and distinct people get distinct bodies. Intermediate
    columns keep the expression tree small (inlined, it grows exponentially).
    """

    def transform(people: DataFrame) -> DataFrame:
        person = F.col("id")
        offset = F.pmod(draws.hash("nhs/offset"), F.lit(NHS_PREFIXES))
        prefix_index = F.pmod(div(person, NHS_SLOTS) * NHS_MULTIPLIER + offset, F.lit(NHS_PREFIXES))
        leading_digit = constant_at(NHS_LEADING_DIGITS, (div(prefix_index, 1_000_000) + 1).cast("int"))
        prefix, leading, eighth, k = F.col("_prefix"), F.col("_leading"), F.col("_eighth"), F.col("_k")
        partial = sum((_digit(prefix, i, 7) * (11 - i) for i in range(1, 8)), F.lit(0)) + eighth * 3
        no_check = F.pmod((1 - partial) * 6, F.lit(11))  # 2 * ninth = 1 - partial (mod 11)
        unusable = F.when(no_check <= 9, no_check).otherwise(F.lit(99))
        same_digit = F.when((prefix == leading * 1_111_111) & (eighth == leading), leading).otherwise(F.lit(99))
        low, high = F.col("_low"), F.col("_high")
        ninth = F.col("_ninth")
        return (
            people.withColumn("_leading", leading_digit)
            .withColumns(
                {
                    "_prefix": leading.cast("long") * 1_000_000 + prefix_index % 1_000_000,
                    "_eighth": div(person % NHS_SLOTS, 8),
                    "_k": person % 8,
                }
            )
            .withColumns({"_unusable": unusable, "_same_digit": same_digit})
            .withColumns(
                {
                    "_low": F.least("_unusable", "_same_digit"),
                    "_high": F.greatest("_unusable", "_same_digit"),
                }
            )
            .withColumn("_high", F.when(high == low, F.lit(99)).otherwise(high))
            .withColumn("_ninth", k + F.when(k >= low, 1).otherwise(0))
            .withColumn("_ninth", ninth + F.when(ninth >= high, 1).otherwise(0))
            .withColumn("_body", prefix * 100 + eighth * 10 + ninth)
            .withColumn("nhs_number", (F.col("_body") * 10 + modulus11_check(F.col("_body"))).cast("string"))
            .drop("_leading", "_prefix", "_eighth", "_k", "_unusable", "_same_digit", "_low", "_high", "_ninth", "_body")
        )

    return transform


def _age_years(dob: Column, on: dt.date) -> Column:
    return F.floor(F.datediff(F.lit(on), dob) / DAYS_PER_YEAR).cast("int")


def _days_before(day: Column | dt.date, days: Column) -> Column:
    start = F.lit(day) if isinstance(day, dt.date) else day
    return F.date_sub(start, days.cast("int"))


def _registered_since(draws: Draws, stream: str, key: Column, dob: Column, until: Column, years: int) -> Column:
    """A registration date up to `years` before `until`, after birth (babies: 2-8 weeks)."""
    after_birth = F.date_add(dob, (14 + draws.below(f"{stream}/birth", key, n=42)).cast("int"))
    earlier = _days_before(until, draws.below(f"{stream}/back", key, n=int(years * DAYS_PER_YEAR)))
    return F.least(F.greatest(after_birth, earlier), until)


def population(spark: SparkSession, settings: SynthSettings, layout: Layout, draws: Draws, parallelism: int) -> DataFrame:
    """One row per person: identity, geography, registrations, conditions, objections."""
    partitions = max(parallelism, -(-settings.people // PEOPLE_PER_PARTITION))
    return (
        spark.range(0, settings.people, numPartitions=partitions)
        .transform(_with_birth(settings, draws))
        .transform(_with_home(settings, layout, draws))
        .transform(_with_registrations(settings, layout, draws))
        .transform(_with_health(settings, draws))
        .transform(_with_objections(settings, draws))
        .transform(with_nhs_number(draws))
    )


def _with_birth(settings: SynthSettings, draws: Draws):
    """Twins, age band, sex and date of birth from the England pyramid."""
    bands = settings.population.age_bands
    starts = [b.start for b in bands]
    widths = [b - a for a, b in zip(starts, starts[1:])] + [OLDEST_AGE + 1 - starts[-1]]
    pyramid = Categorical.single([str(s) for s in starts], [b.share for b in bands])
    twin_rate = min(1.0, 2 * settings.population.twins)  # only odd ids can be second twins
    end = settings.end

    def transform(people: DataFrame) -> DataFrame:
        person = F.col("id")
        is_twin = (person % 2 == 1) & (draws.uniform("twin", person) < twin_rate)
        anchor = F.col("anchor")
        band = F.col("band")
        female = constant_at([b.female for b in bands], band + 1)

        def sex_of(key: Column) -> Column:
            return F.when(draws.uniform("sex", key) < female, F.lit(2)).otherwise(F.lit(1))

        same_sex = ~F.col("is_twin") | (draws.uniform("twin/same_sex", person) < settings.population.same_sex_twins)
        age_days = (
            F.element_at(F.lit(starts), band + 1)
            + draws.uniform("age", anchor) * F.element_at(F.lit(widths), band + 1)
        ) * DAYS_PER_YEAR
        return (
            people.withColumn("is_twin", is_twin)
            .withColumn("anchor", F.when(F.col("is_twin"), person - 1).otherwise(person))
            .withColumn("band", pyramid.index(draws, "band", anchor).cast("int"))
            .withColumn("sex", F.when(same_sex, sex_of(anchor)).otherwise(sex_of(person)))
            .withColumn("dob", _days_before(end, F.floor(age_days)))
            .withColumn("age", _age_years(F.col("dob"), end))
        )

    return transform


def _with_home(settings: SynthSettings, layout: Layout, draws: Draws):
    """Household, postcode and the previous address (local moves stay in the district)."""
    pop = settings.population
    end = settings.end

    def transform(people: DataFrame) -> DataFrame:
        anchor = F.col("anchor")  # twins share a home and move together
        household = F.col("household")
        first, size = layout.district_households(household)
        local = first + draws.below("move/local", anchor, n=size)
        anywhere = draws.below("move/anywhere", anchor, n=layout.households)
        moved_on = _days_before(end, draws.below("move/date", anchor, n=int(pop.move_years * DAYS_PER_YEAR)))
        moved = (draws.uniform("move", anchor) < pop.movers) & (moved_on > F.date_add(F.col("dob"), 60))
        return (
            people.withColumn("household", draws.below("household", anchor, n=layout.households))
            .withColumn(
                "previous_household",
                F.when(draws.uniform("move/is_local", anchor) < pop.local_moves, local).otherwise(anywhere),
            )
            .withColumn("postcode_index", layout.postcode_of_household(household))
            .withColumn("previous_postcode_index", layout.postcode_of_household(F.col("previous_household")))
            .withColumn("postcode", layout.postcode(F.col("postcode_index")))
            .withColumn("previous_postcode", layout.postcode(F.col("previous_postcode_index")))
            .withColumn("area", layout.area(F.col("postcode_index")))
            .withColumn("district", F.split(F.col("postcode"), " ").getItem(0))
            .withColumn("moved", moved)
            .withColumn("moved_on", F.when(F.col("moved"), moved_on))
        )

    return transform


def _with_registrations(settings: SynthSettings, layout: Layout, draws: Draws):
    """Current practice; a mover from another practice's patch also has an old registration."""
    years = settings.population.registration_years
    end = F.lit(settings.end)

    def transform(people: DataFrame) -> DataFrame:
        person, dob = F.col("id"), F.col("dob")
        practice = layout.practice(F.col("postcode_index"))
        previous_practice = layout.practice(F.col("previous_postcode_index"))
        two = F.col("moved") & (previous_practice != practice)
        moved_on = F.col("moved_on")
        return (
            people.withColumn("practice", practice)
            .withColumn("previous_practice", F.when(two, previous_practice))
            .withColumn("practice_code", practice_code(practice))
            .withColumn("previous_practice_code", practice_code(F.col("previous_practice")))
            .withColumn("provider", layout.provider(F.col("postcode_index")))
            .withColumn("previous_provider", layout.provider(F.col("previous_postcode_index")))
            .withColumn("provider_code", provider_code(F.col("provider")))
            .withColumn(
                "registered_on",
                F.when(two, moved_on).otherwise(_registered_since(draws, "registered", person, dob, end, years)),
            )
            .withColumn(
                "previous_registered_on",
                F.when(two, _registered_since(draws, "registered/previous", person, dob, F.date_sub(moved_on, 1), years)),
            )
            .withColumn("first_registered_on", F.coalesce("previous_registered_on", "registered_on"))
        )

    return transform


def _with_health(settings: SynthSettings, draws: Draws):
    """Frailty (how much a person uses services) and long-term conditions."""
    sigma = settings.activity.frailty_sigma
    groups = settings.activity.age_groups

    def transform(people: DataFrame) -> DataFrame:
        person = F.col("id")
        group = stratum_index(F.col("age"), groups)
        frailty = F.exp(draws.normal("frailty", person) * sigma - sigma * sigma / 2)
        people = people.withColumn("age_group", group).withColumn("frailty", frailty)
        for condition in settings.conditions:
            prevalence = F.element_at(F.lit(condition.prevalence), F.col("age_group") + 1)
            prevalence = prevalence * F.when(F.col("sex") == 1, condition.male).otherwise(1.0)
            people = people.withColumn(
                condition_column(condition.name),
                draws.uniform(f"condition/{condition.name}", person) < prevalence,
            )
        return people.withColumn(
            "conditions",
            F.filter(
                F.array(*(F.when(F.col(condition_column(c.name)), F.lit(c.name)) for c in settings.conditions)),
                lambda name: name.isNotNull(),
            )
            if settings.conditions
            else F.array().cast("array<string>"),
        )

    return transform


def condition_column(name: str) -> str:
    return f"has_{name}"


OBJECTION_TYPES = (1, 2)


def objection_columns(objection_type: int) -> tuple[str, str, str]:
    """Column names: dissent date, withdrawal date, and whether the dissent is in force."""
    return (
        f"type{objection_type}_dissent_on",
        f"type{objection_type}_withdrawn_on",
        f"type{objection_type}_objection",
    )


def _with_objections(settings: SynthSettings, draws: Draws):
    """Dissent dates in the last `years`, some withdrawn later; in force at the end date."""
    config = settings.objections
    window = int(config.years * DAYS_PER_YEAR)
    end = F.lit(settings.end)

    def transform(people: DataFrame) -> DataFrame:
        person = F.col("id")
        for objection_type, rate in zip(OBJECTION_TYPES, (config.type1, config.type2)):
            dissent_col, withdrawn_col, in_force_col = objection_columns(objection_type)
            stream = f"objection/{objection_type}"
            dissent_on = F.greatest(
                F.col("first_registered_on"),
                _days_before(settings.end, draws.below(f"{stream}/date", person, n=window)),
            )
            dissent = F.col(dissent_col)
            gap = F.datediff(end, dissent)
            withdrawn = (draws.uniform(f"{stream}/withdrawn", person) < config.withdrawn) & (gap > 0)
            people = (
                people.withColumn(
                    dissent_col, F.when(draws.uniform(stream, person) < rate, dissent_on)
                )
                .withColumn(
                    withdrawn_col,
                    F.when(withdrawn, F.date_add(dissent, (1 + draws.below(f"{stream}/after", person, n=F.greatest(gap, F.lit(1)))).cast("int"))),
                )
                .withColumn(in_force_col, dissent.isNotNull() & F.col(withdrawn_col).isNull())
            )
        return people

    return transform


def people_truth(people: DataFrame) -> DataFrame:
    """The ground-truth people table: true identifiers and states (never in the landing zone)."""
    return people.select(
        F.col("id").alias("person_id"),
        "nhs_number",
        "dob",
        F.col("sex").cast("string").alias("sex"),
        "postcode",
        "area",
        "district",
        F.col("household").alias("household_id"),
        F.when(F.col("is_twin"), F.col("anchor")).alias("twin_of"),
        "moved_on",
        F.when(F.col("moved"), F.col("previous_postcode")).alias("previous_postcode"),
        "practice_code",
        "registered_on",
        "previous_practice_code",
        "previous_registered_on",
        "provider_code",
        "conditions",
        *(objection_columns(t)[2] for t in OBJECTION_TYPES),
    )
