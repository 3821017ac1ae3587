"""Reading the local configuration (YAML files, PATRONI_* environment) and validating it.

Everything here is a pure function of its arguments: no logging, no globals, and the environment
only as the `environ` parameter. Validation needs pydantic (`validation.py`); the agent therefore
runs these functions in a child process (`checker.py`), the CLI and the tests in-process.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pgwarden.config.dynamic import DynamicConfig
from pgwarden.config.env import env_overrides
from pgwarden.config.errors import ConfigError
from pgwarden.config.layering import EffectiveConfig, layer
from pgwarden.config.schema import LocalConfig, dcs_section_problems
from pgwarden.config.validation import dynamic_problems, local_problems, local_warnings, parse_dynamic

_CONFIGURATION_VAR = "PATRONI_CONFIGURATION"


def effective(local: LocalConfig, dynamic_raw: Mapping[str, Any] | None) -> EffectiveConfig:
    """Parse `dynamic_raw` (the DCS /config value; None before the cluster exists, in which case
    `bootstrap.dcs` is the dynamic configuration) and layer it with `local` (layering.layer)."""
    dynamic, warnings = bootstrap_or(local, dynamic_raw)
    return layer(local, dynamic, warnings)


def bootstrap_or(local: LocalConfig, dynamic_raw: Mapping[str, Any] | None) -> tuple[DynamicConfig, list[str]]:
    """parse_dynamic of `dynamic_raw`, or of the local `bootstrap.dcs` when there is no /config yet."""
    return parse_dynamic(local.bootstrap.dcs if dynamic_raw is None else dynamic_raw)


# -- reading the local configuration ----------------------------------------------------------------


def load_local(path: str | Path | None, environ: Mapping[str, str]) -> LocalConfig:
    """Read the local configuration: a YAML file, a directory of *.yml/*.yaml (merged in sorted
    order), else PATRONI_CONFIGURATION, else nothing; then merge the PATRONI_* variables over it.

    Raises ConfigError listing every problem found.
    """
    return validate_local(read_raw(path, environ))


def read_raw(path: str | Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The unvalidated configuration mapping `load_local` validates (also used by the CLI, which
    accepts ctl-only files). Raises ConfigError for unreadable files and bad YAML."""
    if path is not None:
        source = _read_path(Path(path))
    elif _CONFIGURATION_VAR in environ:
        source = _parse_yaml(environ[_CONFIGURATION_VAR], _CONFIGURATION_VAR)
    else:
        source = {}
    return deep_merge(source, env_overrides(environ))


def load_local_noting(path: str | Path | None, environ: Mapping[str, str]) -> tuple[LocalConfig, list[str]]:
    """`load_local`, and the warnings an agent logs at start about the configuration's keys (the
    harmless ones pgwarden ignores, unknown ones: `support.py`)."""
    raw = read_raw(path, environ)
    return validate_local(raw), local_warnings(raw)


def validate_local(data: Mapping[str, Any]) -> LocalConfig:
    """A merged raw mapping -> LocalConfig, or ConfigError with one message per problem."""
    problems = dcs_section_problems(dict(data))
    config, found = local_problems(data)
    problems += found
    bootstrap = data.get("bootstrap")
    if isinstance(bootstrap, Mapping) and isinstance(bootstrap.get("dcs"), Mapping):
        problems += dynamic_problems(bootstrap["dcs"], "bootstrap.dcs")
    if problems or config is None:
        raise ConfigError(problems)
    return config


def validate_file(path: str | Path | None, environ: Mapping[str, str]) -> list[str]:
    """The problems `load_local` would raise, as a list; empty when the configuration is valid."""
    try:
        load_local(path, environ)
    except ConfigError as exc:
        return exc.problems
    return []


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping: `override` over `base`, recursing where both sides hold a mapping."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_path(path: Path) -> dict[str, Any]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise ConfigError([f"{path}: expected *.yml or *.yaml files in this directory, found none"])
        merged: dict[str, Any] = {}
        for file in files:
            merged = deep_merge(merged, _read_file(file))
        return merged
    return _read_file(path)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the configuration file: {exc}"]) from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{source}: YAML syntax error{where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML syntax error: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a YAML mapping at the top level, found a {type(data).__name__}"])
    return data


