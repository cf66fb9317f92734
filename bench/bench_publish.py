"""Publishing every green table on a synthetic warehouse, and what secondary suppression costs.

The warehouse is the cached ingested one of the linkage bench (`bench_linkage.prepared`),
linked here if it is not yet (`link` consumes only unlinked submissions, so a linked
warehouse costs one ledger read). Seconds cover the whole publication: sources from the
warehouse, cells, protection, the LP audit, Delta writes and the site. Information loss
is the share of published cells hidden, with secondary suppression and with the primary
cells alone (the cells primary-only suppression would hide; such a table could not be
published, since its audit fails).

Tables with a period dimension are published monthly and protected against their earlier
publications, so the bench publishes twice: as of the month before the latest, then the
latest month (the figures without `previous_month`), protected against the first. Each run
starts that series afresh, so its figures do not depend on how often the bench ran.

`python -m bench publish --people 100000 1000000`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.bench_linkage import prepared
from caredata_spark.linkage.job import link
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.publish import Warehouse, latest_activity, publish, whole_months_end
from caredata_spark.storage import open_store


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def run(spark: SparkSession, people: int) -> dict[str, Any]:
    warehouse, _ = prepared(spark, people)
    store = open_store(spark)
    link(spark, store, warehouse, LinkageSettings())
    shutil.rmtree(Path(warehouse) / "publish" / "cells", ignore_errors=True)
    latest = whole_months_end(latest_activity(Warehouse(store, warehouse)))
    out = Path(tempfile.mkdtemp(prefix="bench-publish-")) / "site"
    try:
        started = time.perf_counter()
        publish(spark, store, warehouse, out, latest.replace(day=1) - dt.timedelta(days=1))
        previous_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = publish(spark, store, warehouse, out, latest)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    prefix = f"publish.{people}"
    figures: dict[str, Any] = {
        f"{prefix}.previous_month.seconds": round(previous_seconds, 1),
        f"{prefix}.seconds": round(seconds, 1),
        f"{prefix}.tables": len(result.published),
        f"{prefix}.refused": ",".join(sorted(result.refused)) or "none",
    }
    for name, summary in result.published.items():
        cells, primary, secondary = (summary[k] for k in ("cells", "primary", "secondary"))
        figures[f"{prefix}.{name}"] = (
            f"{cells} cells, {result.seconds[name]:.1f}s, hidden {_share(primary + secondary, cells)}"
            f" (primary only {_share(primary, cells)})"
        )
    total = result.figures()
    figures[f"{prefix}.hidden_share"] = _share(total["primary"] + total["secondary"], total["cells"])
    figures[f"{prefix}.primary_only_share"] = _share(total["primary"], total["cells"])
    return figures
