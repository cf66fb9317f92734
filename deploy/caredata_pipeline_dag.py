"""Airflow DAGs: the caredata pipeline once a day (`deploy/submit.sh run --date <day it runs>`)
and table upkeep once a week (`deploy/submit.sh maintain`).

Copy this file into the Airflow DAGs folder, set the Airflow Variables below (an unset one
leaves deploy/submit.sh's own default) and create the pool both DAGs' tasks run in, so
upkeep never runs beside a pipeline run on the same warehouse:

    airflow pools set caredata_warehouse 1 "one caredata job per warehouse at a time"

Nothing in the repository imports this file; it needs Airflow 2.7+ (2.x or 3.x) only where it
runs. Alerts are e-mails: configure SMTP ([smtp] smtp_host/smtp_port/smtp_mail_from/smtp_starttls
and, on Airflow 3, the `smtp_default` connection too); see deploy/README.md.

The pipeline task maps `caredata run`'s exit codes to what a scheduler should do:

    0  done                                   success
    1  a step failed; a re-run resumes it     retried (with back-off), then failed + alert
    2  usage or configuration error            failed at once, no retry (a retry cannot help)
    3  done, but some inputs were refused      success, and an alert to the data managers
                                              (if that alert cannot be sent: retried, and the
                                              retry, finding the run done, exits 3 again)
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

from airflow.utils.email import send_email

try:  # Airflow 3
    from airflow.sdk import DAG, Variable
    from airflow.providers.standard.operators.python import PythonOperator

    def setting(key: str, default: str) -> str:
        return Variable.get(key, default=default)

except ImportError:  # Airflow 2.7-2.10
    from airflow import DAG
    from airflow.models import Variable
    from airflow.operators.python import PythonOperator

    def setting(key: str, default: str) -> str:
        return Variable.get(key, default_var=default)

try:  # Airflow 3.1+ (the airflow.exceptions names are deprecated there)
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:
    from airflow.exceptions import AirflowException, AirflowFailException

try:  # Airflow 3.1+
    from airflow.sdk import CronTriggerTimetable
except ImportError:  # Airflow 2.7-3.0
    from airflow.timetables.trigger import CronTriggerTimetable

DEFAULT_ALERTS = "safe-haven-ops@example.nhs.uk"
# read when the file is parsed, for the failure e-mails; the others are read when a task runs
# (on Airflow 3 a Variable read outside the DAG processor or a task, e.g. while `airflow tasks
# test` parses the file, silently falls back to the default)
ALERTS = setting("caredata_alert_email", DEFAULT_ALERTS)

POOL = "caredata_warehouse"  # one slot: the pipeline and upkeep never run at once

# Trigger timetables on Airflow 2 and 3 alike: a run's logical date is the moment it runs,
# so the 02:00 run of day D passes `--date D`, as the cron file does (with a plain cron
# string, Airflow 2 would pass D-1: the start of its data interval). UK time, like the
# submission window; 02:00 London is 01:00 or 02:00 UTC, the same calendar day.
TIMEZONE = "Europe/London"
DAILY_0200 = CronTriggerTimetable("0 2 * * *", timezone=TIMEZONE)
SUNDAY_0600 = CronTriggerTimetable("0 6 * * 0", timezone=TIMEZONE)

DONE, STEP_FAILED, USAGE, INPUTS_REFUSED = 0, 1, 2, 3

DEFAULT_REPO = "/opt/caredata-spark"  # where submit.sh is, so needed here
# Airflow Variable -> submit.sh's environment; the defaults of unset ones live in submit.sh only
SUBMIT_VARIABLES = {
    "caredata_spark_submit": "CAREDATA_SPARK_SUBMIT",
    "caredata_master": "CAREDATA_MASTER",
    "caredata_delta_package": "CAREDATA_DELTA_PACKAGE",
}


def submitted(job: str, *args: str) -> int:
    """`submit.sh JOB ARGS`; its exit code, with usage errors failing the task at once."""
    repo = setting("caredata_repo", DEFAULT_REPO)
    given = {name: value for key, name in SUBMIT_VARIABLES.items() if (value := setting(key, ""))}
    env = {**os.environ, "CAREDATA_REPO": repo, **given}
    # the cluster's spark-submit command line lives in one place, deploy/submit.sh
    command = [f"{repo}/deploy/submit.sh", job, *args]
    print("running:", shlex.join(command), flush=True)
    code = subprocess.run(command, check=False, env=env).returncode
    what = shlex.join(["caredata", job, *args])
    if code == USAGE:
        raise AirflowFailException(f"{what}: usage or configuration error (exit 2)")
    if code not in (DONE, INPUTS_REFUSED):
        raise AirflowException(f"{what}: exit {code}; a retry resumes where it stopped")
    return code


def run_date_of(context: dict) -> str:
    """The run's logical date (the day it runs, as cron's `date +%F`, under DAILY_0200).

    A run triggered on Airflow 3 without a logical date has none ('ds' is undefined there):
    the day it was triggered then.
    """
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def run_pipeline(**context) -> None:
    """One `caredata run` for the run's date; its exit code decides retry, failure or alert."""
    run_date = run_date_of(context)
    if submitted("run", "--date", run_date) == INPUTS_REFUSED:
        alerts = setting("caredata_alert_email", DEFAULT_ALERTS)
        try:
            send_email(
                to=alerts,
                subject=f"caredata run {run_date}: submissions refused",
                html_content=(
                    f"The pipeline run of {run_date} finished, but some submissions were refused. "
                    "Their reasons are in the ingest/submissions table (status = 'refused'); the "
                    "submitters need to send corrected files, which the next run picks up. Where "
                    "the reason is the platform's own (a wrong transport key, say), fix it and run "
                    "`caredata ingest --retry-refused`."
                ),
            )
        except Exception as err:
            # retried: the retry finds every step finished and exits 3 again, so it sends
            # the alert again instead of turning green without it
            raise AirflowException(
                f"caredata run {run_date} finished with refused submissions (exit 3), but the "
                f"alert to {alerts} could not be sent ({type(err).__name__}); a retry sends it"
            ) from err


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
    schedule=DAILY_0200,  # after the overnight submission window closes
    start_date=dt.datetime(2025, 4, 1),
    catchup=False,
    max_active_runs=1,  # runs share one warehouse; the ledger assumes one writer at a time
    default_args=DEFAULT_ARGS,
    tags=["caredata"],
) as pipeline_dag:
    PythonOperator(task_id="caredata_run", python_callable=run_pipeline)

with DAG(
    dag_id="caredata_maintain",
    description="compaction, vacuum and Delta log tidy of the warehouse's tables, weekly",
    schedule=SUNDAY_0600,  # after the night's pipeline run (the pool keeps them apart)
    start_date=dt.datetime(2025, 4, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["caredata"],
) as maintain_dag:
    PythonOperator(task_id="caredata_maintain", python_callable=maintain)
