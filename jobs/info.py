"""spark-submit twin of `caredata info`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("info")
