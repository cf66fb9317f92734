"""Platform configuration: YAML in `conf/`, validated into typed dataclasses on load.

Configuration is data, so mistakes in it are user errors: every problem is reported as a
`ConfigError` naming the file and the dotted field path, never as a traceback from deep
inside a job.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from caredata_spark.errors import UsageError

T = TypeVar("T")

# The reference data (codes, objection codes, publication, agreements) and the default
# configuration. Beside the package in a checkout; a driver importing the package from
# the spark-submit zip has no such folder, so schedulers name it (deploy/submit.sh does).
CONF_DIR_ENV = "CAREDATA_CONF_DIR"
CONF_DIR = Path(os.environ.get(CONF_DIR_ENV) or Path(__file__).resolve().parent.parent / "conf")
DEFAULT_CONF = CONF_DIR / "local.yaml"


class ConfigError(UsageError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class SparkSettings:
    """How the SparkSession is built; ignored where spark-submit already chose a master."""

    master: str = "local[2]"
    app_name: str = "caredata-spark"
    shuffle_partitions: int = 4
    log_level: str = "WARN"
    ui_enabled: bool = False
    driver_memory: str = "4g"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageSettings:
    """`auto` uses the delta-spark connector when it is on the classpath, else delta-rs."""

    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "delta-spark", "delta-rs"):
            raise ConfigError(
                f"storage.backend: expected auto, delta-spark or delta-rs, got {self.backend!r}"
            )


@dataclass(frozen=True)
class KeySettings:
    """Where each role's key lives: a file path, or an environment variable holding the key.

    Keys never live in configuration itself; this only says where to find them.
    """

    directory: str = "keys"
    linkage_env: str = "CAREDATA_LINKAGE_KEY"
    vault_env: str = "CAREDATA_VAULT_KEY"
    pseudonym_env: str = "CAREDATA_PSEUDONYM_KEY"
    transport_env: str = "CAREDATA_TRANSPORT_KEY"


@dataclass(frozen=True)
class Settings:
    landing: str | None = None
    warehouse: str | None = None
    submitters: str | None = None  # submitter register (caredata_spark/organisations.py)
    spark: SparkSettings = field(default_factory=SparkSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    synth: dict[str, Any] = field(default_factory=dict)
    linkage: dict[str, Any] = field(default_factory=dict)  # caredata_spark.linkage.settings


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            return _convert(value, arg, where)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, value_type = typing.get_args(tp)
        if value_type is Any:
            return dict(value)
        return {str(k): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def from_mapping(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, naming the field of any error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'configuration'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: required field is missing")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where + '.' if where else ''}{err}") from None


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


def from_yaml(cls: type[T], path: Path) -> T:
    """A YAML file as dataclass `cls`; an error names the file once, then the field."""
    data = read_yaml(path)  # its own errors name the file
    try:
        return from_mapping(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load `path` (default `conf/local.yaml`), then apply non-None command-line overrides."""
    conf_path = Path(path) if path else DEFAULT_CONF
    data = read_yaml(conf_path) if conf_path.exists() or path else {}
    data = dict(data or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return from_mapping(Settings, data)
    except ConfigError as err:
        raise ConfigError(f"{conf_path}: {err}") from None
