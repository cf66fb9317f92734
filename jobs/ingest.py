"""spark-submit twin of `caredata ingest`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("ingest")
