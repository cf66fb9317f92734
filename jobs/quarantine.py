"""spark-submit twin of `caredata quarantine`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("quarantine")
