"""spark-submit twin of `caredata link`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("link")
