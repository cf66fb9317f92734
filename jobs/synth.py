"""spark-submit twin of `caredata synth`."""

from caredata_spark.cli import job

if __name__ == "__main__":
    job("synth")
