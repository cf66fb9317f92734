"""spark-submit twin of `caredata keys`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("keys")
