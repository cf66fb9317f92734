"""spark-submit twin of `caredata publish`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("publish")
