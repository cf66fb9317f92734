"""spark-submit twin of `caredata run` (the whole pipeline, for schedulers)."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("run")
