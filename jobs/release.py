"""spark-submit twin of `caredata release`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("release")
