"""pgwarden's configuration: Patroni-compatible local YAML/env, dynamic `/config`, and their layering.

The configuration types and their layering import neither PyYAML nor pydantic, so the agent, which
holds configuration but validates it in a child process (`checker.py`), never loads them. Reading
and validating (`load_local`, `validate_file`, `effective`, `parse_dynamic`) load them on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pgwarden.config.addresses import api_url, conn_url, parse_listen
from pgwarden.config.dynamic import DynamicConfig, adjust_timing
from pgwarden.config.env import scrub_patroni_env
from pgwarden.config.errors import ConfigError
from pgwarden.config.layering import EffectiveConfig, layer
from pgwarden.config.schema import LocalConfig

if TYPE_CHECKING:
    from pgwarden.config.loader import effective, load_local, validate_file
    from pgwarden.config.validation import parse_dynamic

# Name -> module of the functions that need PyYAML or pydantic, imported when first asked for.
_VALIDATING = {
    "effective": "pgwarden.config.loader",
    "load_local": "pgwarden.config.loader",
    "validate_file": "pgwarden.config.loader",
    "parse_dynamic": "pgwarden.config.validation",
}


def __getattr__(name: str) -> Any:
    if name in _VALIDATING:
        return getattr(importlib.import_module(_VALIDATING[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DynamicConfig",
    "EffectiveConfig",
    "LocalConfig",
    "adjust_timing",
    "api_url",
    "conn_url",
    "effective",
    "layer",
    "load_local",
    "parse_dynamic",
    "parse_listen",
    "scrub_patroni_env",
    "validate_file",
]
