"""Where people live and who serves them: households, postcodes, practices, providers.

Households are numbered 0..H-1 and postcodes cover runs of consecutive households, so many
people share a postcode. A postcode index decodes, in mixed radix, to area / district /
sector / unit (`LS1 4AB`), and practices and hospital providers serve contiguous runs of
postcodes, so each serves a coherent patch and a provider serves whole areas. The layout
is a handful of integers computed on the driver; everything per person is an expression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from caredata_spark.config import ConfigError
from caredata_spark.synthetic.settings import Population

UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters a postcode's inward unit may use
MAX_UNITS_PER_SECTOR = len(UNIT_LETTERS) ** 2
MAX_DISTRICTS_PER_AREA = 99
PRACTICE_LETTERS = "ABCDEFGHJKLMNPY"  # first letter of a GP practice code (A81001)
PRACTICE_FIRST_NUMBER = 81001
PROVIDER_SECOND = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # provider codes R + letter + letter/digit
PROVIDER_THIRD = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
MAX_PROVIDERS = len(PROVIDER_SECOND) * len(PROVIDER_THIRD)
PSEUDO_POSTCODES = ("ZZ99 3CZ", "ZZ99 3VZ", "ZZ99 3WZ")


def div(value: Column, divisor: int | Column) -> Column:
    """Integer division of non-negative longs (exact below 2^53)."""
    return F.floor(value / divisor).cast("long")


@dataclass(frozen=True)
class Layout:
    """Sizes of everything, from the number of people and the population settings."""

    people: int
    households: int
    households_per_postcode: int
    postcodes: int
    areas: int
    districts_per_area: int
    sectors_per_district: int
    units_per_sector: int
    practices: int
    providers: int
    area_codes: tuple[str, ...]

    @classmethod
    def plan(cls, people: int, population: Population) -> Layout:
        households = max(1, math.ceil(people / population.household_size))
        postcodes = math.ceil(households / population.households_per_postcode)
        districts = math.ceil(postcodes / population.postcodes_per_district)
        areas = min(
            len(population.areas),
            postcodes,
            max(population.min_areas, math.ceil(districts / population.districts_per_area)),
        )
        districts_per_area = math.ceil(max(districts, areas) / areas)
        if districts_per_area > MAX_DISTRICTS_PER_AREA:
            raise ConfigError(
                f"population: {people:,} people need {districts_per_area} districts per area; "
                "list more areas or raise postcodes_per_district"
            )
        sectors = min(
            population.sectors_per_district,
            math.ceil(postcodes / (areas * districts_per_area)),
        )
        units = math.ceil(postcodes / (areas * districts_per_area * sectors))
        if units > MAX_UNITS_PER_SECTOR:
            raise ConfigError(
                f"population: {units} postcodes per sector exceed {MAX_UNITS_PER_SECTOR}; "
                "raise sectors_per_district or districts_per_area"
            )
        providers = max(population.min_providers, round(people / population.people_per_provider))
        if providers > MAX_PROVIDERS:
            raise ConfigError(f"population: {providers} providers exceed {MAX_PROVIDERS}")
        return cls(
            people=people,
            households=households,
            households_per_postcode=population.households_per_postcode,
            postcodes=postcodes,
            areas=areas,
            districts_per_area=districts_per_area,
            sectors_per_district=sectors,
            units_per_sector=units,
            practices=max(1, round(people / population.people_per_practice)),
            providers=providers,
            area_codes=tuple(population.areas[:areas]),
        )

    @property
    def households_per_district(self) -> int:
        return self.households_per_postcode * self.units_per_sector * self.sectors_per_district

    def postcode_of_household(self, household: Column) -> Column:
        return div(household, self.households_per_postcode)

    def district_households(self, household: Column) -> tuple[Column, Column]:
        """First household of the household's district, and how many it has."""
        size = self.households_per_district
        first = div(household, size) * size
        return first, F.least(F.lit(size), F.lit(self.households) - first)

    def postcode(self, index: Column) -> Column:
        """The postcode text of a postcode index, e.g. `LS1 4AB`."""
        units, sectors = self.units_per_sector, self.sectors_per_district
        unit = index % units
        sector = div(index, units) % sectors
        district = div(index, units * sectors) % self.districts_per_area
        letters = F.lit(list(UNIT_LETTERS))
        return F.concat(
            self.area(index),
            (district + 1).cast("string"),
            F.lit(" "),
            sector.cast("string"),
            F.element_at(letters, (div(unit, len(UNIT_LETTERS)) + 1).cast("int")),
            F.element_at(letters, (unit % len(UNIT_LETTERS) + 1).cast("int")),
        )

    def area(self, index: Column) -> Column:
        """Postcode area (the letters), e.g. `LS`."""
        per_area = self.units_per_sector * self.sectors_per_district * self.districts_per_area
        return F.element_at(F.lit(list(self.area_codes)), (div(index, per_area) + 1).cast("int"))

    def practice(self, postcode: Column) -> Column:
        """Index of the practice whose catchment holds the postcode."""
        return div(postcode * self.practices, self.postcodes)

    def provider(self, postcode: Column) -> Column:
        """Index of the hospital provider serving the postcode's patch."""
        return div(postcode * self.providers, self.postcodes)


def practice_code(index: Column) -> Column:
    """Organisation code of a GP practice: letter + five digits, e.g. `A81001`."""
    letter = F.element_at(F.lit(list(PRACTICE_LETTERS)), (index % len(PRACTICE_LETTERS) + 1).cast("int"))
    number = div(index, len(PRACTICE_LETTERS)) + PRACTICE_FIRST_NUMBER
    return F.concat(letter, F.lpad(number.cast("string"), 5, "0"))


def provider_code(index: Column) -> Column:
    """Organisation code of an NHS trust: `R` + two characters, e.g. `RTH`."""
    second = F.element_at(F.lit(list(PROVIDER_SECOND)), (div(index, len(PROVIDER_THIRD)) + 1).cast("int"))
    third = F.element_at(F.lit(list(PROVIDER_THIRD)), (index % len(PROVIDER_THIRD) + 1).cast("int"))
    return F.concat(F.lit("R"), second, third)
