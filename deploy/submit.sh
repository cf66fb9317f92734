#!/usr/bin/env bash
# spark-submit of one caredata job on the cluster: `submit.sh JOB [ARGS...]` runs
# jobs/JOB.py --conf $CAREDATA_CONF_DIR/cluster.yaml ARGS with the delta-spark package, the
# packed environment and the JIT flag, as "Running on a cluster" in the README. Its exit
# code is the job's. Python drivers run here (client mode: a standalone master runs no
# Python driver itself), so configuration and reference data are read from this
# machine's checkout, named absolutely: the scheduler's working folder does not matter.
set -uo pipefail

JOB="$1"
shift
REPO="${CAREDATA_REPO:-/opt/caredata-spark}"
MASTER="${CAREDATA_MASTER:-spark://spark-master:7077}"
DELTA="${CAREDATA_DELTA_PACKAGE:-io.delta:delta-spark_2.13:4.0.0}"
SPARK_SUBMIT="${CAREDATA_SPARK_SUBMIT:-spark-submit}"
# the driver imports the package from the zip, which holds no conf/: name it (config.py)
export CAREDATA_CONF_DIR="${CAREDATA_CONF_DIR:-$REPO/conf}"

exec "$SPARK_SUBMIT" \
  --master "$MASTER" \
  --packages "$DELTA" \
  --driver-java-options -XX:-DontCompileHugeMethods \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --archives "$REPO/dist/env.tar.gz#env" \
  --conf spark.pyspark.python=./env/bin/python \
  --py-files "$REPO/dist/caredata_spark.zip" \
  "$REPO/jobs/$JOB.py" --conf "$CAREDATA_CONF_DIR/cluster.yaml" "$@"
