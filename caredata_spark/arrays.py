"""Array columns built in generated code.

Spark compiles most expressions into Java (whole-stage code generation), but not its
higher-order functions (`filter`, `transform`, `aggregate`, `zip_with`): those are
evaluated row by row by the interpreter, and with them every expression beneath them,
which the optimiser has usually merged in from earlier projections. So an innocent
`F.filter(F.array(a, b, c), is not null)` over rule columns computes the rules a second
time, interpreted. Ingest's GP events validated in 12.4 s instead of 16.2 s (100k bench)
once their reason arrays were built here.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def present(*candidates: Column) -> Column:
    """The non-null values among `candidates`, in order, as an array (empty when none).

    `array_except` against a null is generated code. It also drops repeats, so callers
    pass candidates that are distinct by construction (each names its own field or code).
    """
    return F.array_except(F.array(*candidates), F.array(F.lit(None)))
