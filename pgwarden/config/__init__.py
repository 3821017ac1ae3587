"""pgwarden's configuration: Patroni-compatible local YAML/env, dynamic `/config`, and their layering."""

from pgwarden.config.addresses import api_url, conn_url, parse_listen
from pgwarden.config.dynamic import DynamicConfig, adjust_timing, parse_dynamic
from pgwarden.config.env import scrub_patroni_env
from pgwarden.config.errors import ConfigError
from pgwarden.config.loader import EffectiveConfig, effective, load_local, validate_file
from pgwarden.config.schema import LocalConfig

__all__ = [
    "ConfigError",
    "DynamicConfig",
    "EffectiveConfig",
    "LocalConfig",
    "adjust_timing",
    "api_url",
    "conn_url",
    "effective",
    "load_local",
    "parse_dynamic",
    "parse_listen",
    "scrub_patroni_env",
    "validate_file",
]
