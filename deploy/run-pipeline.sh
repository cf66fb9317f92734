#!/usr/bin/env bash
# One scheduled `caredata run` for a date (default today) under spark-submit, acting on its
# exit code: 0 done; 1 a step failed -> retry (the ledger resumes at that step); 2 usage or
# configuration -> alert, no retry; 3 done but inputs refused -> alert. A run killed by a
# signal (exit > 128) is retried like 1. flock keeps two runs off the same warehouse.
set -uo pipefail

RUN_DATE="${1:-$(date +%F)}"
ALERT="${CAREDATA_ALERT:-}"
RETRIES="${CAREDATA_RETRIES:-3}"
DELAY="${CAREDATA_RETRY_DELAY:-900}"   # seconds, doubled after each failed attempt

alert() {
  echo "caredata run ${RUN_DATE}: $1" >&2
  if [[ -n "$ALERT" ]] && command -v mail >/dev/null; then
    echo "$1" | mail -s "caredata run ${RUN_DATE}" "$ALERT"
  fi
}

submit() {
  "$(dirname "$0")/submit.sh" run --date "$RUN_DATE"
}

exec 9>"${TMPDIR:-/tmp}/caredata-pipeline.lock"
if ! flock -n 9; then
  echo "caredata run ${RUN_DATE}: another run holds the lock; not starting" >&2
  exit 0
fi

for attempt in $(seq 0 "$RETRIES"); do
  submit
  code=$?
  case "$code" in
    0) exit 0 ;;
    2) alert "usage or configuration error (exit 2); fix it, then re-run"; exit 2 ;;
    3) alert "finished, but some submissions were refused: see ingest/submissions (a fault of the platform's own, e.g. a wrong transport key: fix it, then caredata ingest --retry-refused)"; exit 3 ;;
  esac
  if (( attempt < RETRIES )); then
    echo "caredata run ${RUN_DATE}: exit ${code}, attempt $((attempt + 1)); resuming in ${DELAY}s" >&2
    sleep "$DELAY"
    DELAY=$((DELAY * 2))
  fi
done
alert "failed after $((RETRIES + 1)) attempts (last exit ${code}); re-run to resume"
exit "$code"
