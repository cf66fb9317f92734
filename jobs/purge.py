"""spark-submit twin of `caredata purge`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("purge")
