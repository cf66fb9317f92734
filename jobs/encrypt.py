"""spark-submit twin of `caredata encrypt`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("encrypt")
