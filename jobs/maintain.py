"""spark-submit twin of `caredata maintain`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("maintain")
