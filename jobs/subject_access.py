"""spark-submit twin of `caredata subject-access`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("subject-access")
