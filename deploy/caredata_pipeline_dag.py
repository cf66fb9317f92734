"""Airflow DAGs: the caredata pipeline once a day (`deploy/submit.sh run --date {{ ds }}`)
and table upkeep once a week (`deploy/submit.sh maintain`).

Copy this file into the Airflow DAGs folder, set the Airflow Variables below (or edit the
defaults) and create the pool both DAGs' tasks run in, so upkeep never runs beside a
pipeline run on the same warehouse:

    airflow pools set caredata_warehouse 1 "one caredata job per warehouse at a time"

Nothing in the repository imports this file; it needs Airflow 2.7+ only where it runs.

The pipeline task maps `caredata run`'s exit codes to what a scheduler should do:

    0  done                                   success
    1  a step failed; a re-run resumes it     retried (with back-off), then failed + alert
    2  usage or configuration error            failed at once, no retry (a retry cannot help)
    3  done, but some inputs were refused      success, and an alert to the data managers
    killed by a signal (lost node, OOM kill)  retried, like 1: the run resumes where it died

A retry re-runs the same `--date`; the run ledger (`ops/pipeline_runs`) skips finished
steps and the step that died resumes under its Delta transaction ids, so retries never
duplicate data. `caredata maintain` has codes 0, 1 and 2 with the same meanings; each of its
table operations is a Delta commit of its own, so a retry simply carries on.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.models import Variable
from airflow.operators.python import PythonOperator
from airflow.utils.email import send_email

REPO = Variable.get("caredata_repo", default_var="/opt/caredata-spark")
SPARK_SUBMIT = Variable.get("caredata_spark_submit", default_var="spark-submit")
MASTER = Variable.get("caredata_master", default_var="spark://spark-master:7077")
DELTA = Variable.get("caredata_delta_package", default_var="io.delta:delta-spark_2.13:4.0.0")
ALERTS = Variable.get("caredata_alert_email", default_var="safe-haven-ops@example.nhs.uk")

POOL = "caredata_warehouse"  # one slot: the pipeline and upkeep never run at once

DONE, STEP_FAILED, USAGE, INPUTS_REFUSED = 0, 1, 2, 3

# the cluster's spark-submit command line lives in one place, deploy/submit.sh
SUBMIT = f"{REPO}/deploy/submit.sh"
SUBMIT_ENV = {
    **os.environ,
    "CAREDATA_REPO": REPO,
    "CAREDATA_SPARK_SUBMIT": SPARK_SUBMIT,
    "CAREDATA_MASTER": MASTER,
    "CAREDATA_DELTA_PACKAGE": DELTA,
}


def submitted(job: str, *args: str) -> int:
    """`submit.sh JOB ARGS`; its exit code, with usage errors failing the task at once."""
    command = [SUBMIT, job, *args]
    print("running:", shlex.join(command), flush=True)
    code = subprocess.run(command, check=False, env=SUBMIT_ENV).returncode
    what = shlex.join(["caredata", job, *args])
    if code == USAGE:
        raise AirflowFailException(f"{what}: usage or configuration error (exit 2)")
    if code not in (DONE, INPUTS_REFUSED):
        raise AirflowException(f"{what}: exit {code}; a retry resumes where it stopped")
    return code


def run_pipeline(run_date: str) -> None:
    """One `caredata run` for `run_date`; its exit code decides retry, failure or alert."""
    if submitted("run", "--date", run_date) == INPUTS_REFUSED:
        send_email(
            to=ALERTS,
            subject=f"caredata run {run_date}: submissions refused",
            html_content=(
                f"The pipeline run of {run_date} finished, but some submissions were refused. "
                "Their reasons are in the ingest/submissions table (status = 'refused'); the "
                "submitters need to send corrected files, which the next run picks up."
            ),
        )


def maintain() -> None:
    """Weekly upkeep: compaction, vacuum (default retention), log tidy; see README."""
    submitted("maintain")


DEFAULT_ARGS = {
    "owner": "safe-haven-ops",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=15),
    "retry_exponential_backoff": True,
    "email": [ALERTS],
    "email_on_failure": True,
    "email_on_retry": False,
    "execution_timeout": dt.timedelta(hours=8),
    "pool": POOL,
}

with DAG(
    dag_id="caredata_pipeline",
    description="ingest -> link -> publish -> due releases, daily",
    schedule="0 2 * * *",  # after the overnight submission window closes
    start_date=dt.datetime(2025, 4, 1),
    catchup=False,
    max_active_runs=1,  # runs share one warehouse; the ledger assumes one writer at a time
    default_args=DEFAULT_ARGS,
    tags=["caredata"],
) as pipeline_dag:
    PythonOperator(
        task_id="caredata_run",
        python_callable=run_pipeline,
        op_kwargs={"run_date": "{{ ds }}"},
    )

with DAG(
    dag_id="caredata_maintain",
    description="compaction, vacuum and Delta log tidy of the warehouse's tables, weekly",
    schedule="0 6 * * 0",  # Sundays, after the night's pipeline run (the pool keeps them apart)
    start_date=dt.datetime(2025, 4, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["caredata"],
) as maintain_dag:
    PythonOperator(task_id="caredata_maintain", python_callable=maintain)
