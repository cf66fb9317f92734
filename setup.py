from setuptools import find_packages, setup

setup(
    name="caredata-spark",
    version="0.1.0",
    description="Spark platform of a national health-data safe haven: ingest, link, release.",
    python_requires=">=3.10",
    packages=find_packages(include=["caredata_spark", "caredata_spark.*"]),
    package_data={"caredata_spark": ["py.typed", "log4j2.properties"]},
    install_requires=[
        "pyspark>=4.0,<5",
        "deltalake>=1.5,<2",
        "pyarrow>=15",
        "numpy>=1.24",  # line splitting of submissions (submission_lines)
        "pandas>=2.0,<3",  # pyspark warns on pandas 3.x
        "cryptography>=50",  # HPKE with the ML-KEM-768+X25519 hybrid KEM
        "pyyaml>=6",
        "scipy>=1.11",  # sparse relation matrices of the disclosure audit
        "highspy>=1.16,<2",  # its linear programmes, one warm-started HiGHS model per sub-table
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.6",  # make test: two workers, see tests/conftest.py
            "chispa>=0.10",
            "hypothesis>=6.100",
            "duckdb>=1.1",
        ],
        "bench": ["duckdb>=1.1", "splink>=5,<6"],  # Splink: the linkage bench's baseline
    },
    entry_points={"console_scripts": ["caredata=caredata_spark.cli:main"]},
)
