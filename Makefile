# One command each: `make test`, `make demo`, `make bench`. Each creates/updates .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
DEMO_DIR ?= demo
DEMO_PEOPLE ?= 20000
# pytest-xdist processes for `make test`, each with its own local Spark session
TEST_WORKERS ?= 2

export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: install test demo bench package clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(PY) -m caredata_spark.demo --dir $(DEMO_DIR) --people $(DEMO_PEOPLE)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'  # Splink and DuckDB: benchmarks only
	$(PY) -m bench

# A zip of the library for spark-submit --py-files (see README, "Running on a cluster").
package: $(STAMP)
	rm -rf dist && mkdir -p dist
	cd . && $(PY) -c "import shutil; shutil.make_archive('dist/caredata_spark', 'zip', '.', 'caredata_spark')"
	@echo "dist/caredata_spark.zip"

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache $(DEMO_DIR)
