"""Publishing every green table on a synthetic warehouse, and what secondary suppression costs.

The warehouse is the cached ingested one of the linkage bench (`bench_linkage.prepared`),
linked here if it is not yet (`link` consumes only unlinked submissions, so a linked
warehouse costs one ledger read). Seconds cover the whole publication: sources from the
warehouse, cells, protection, the LP audit, Delta writes and the site. Information loss
is the share of published cells hidden, with secondary suppression and with the primary
cells alone (the cells primary-only suppression would hide; such a table could not be
published, since its audit fails).

`python -m bench publish --people 100000 1000000`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.bench_linkage import prepared
from caredata_spark.linkage.job import link
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.publish import publish
from caredata_spark.storage import open_store


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def run(spark: SparkSession, people: int) -> dict[str, Any]:
    warehouse, _ = prepared(spark, people)
    store = open_store(spark)
    link(spark, store, warehouse, LinkageSettings())
    out = Path(tempfile.mkdtemp(prefix="bench-publish-")) / "site"
    started = time.perf_counter()
    try:
        result = publish(spark, store, warehouse, out)
    finally:
        seconds = time.perf_counter() - started
        shutil.rmtree(out.parent, ignore_errors=True)
    prefix = f"publish.{people}"
    figures: dict[str, Any] = {
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
