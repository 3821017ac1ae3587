"""PATRONI_* environment variables -> a nested config mapping to merge over the file (contract 6.4).

Each variable maps to one key path and one value kind. A value that does not parse as its kind is
kept as the raw string, so validation reports it with the key path, expected type and found value.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from enum import Enum
from typing import Any


class Kind(Enum):
    STR = "str"
    INT = "int"
    BOOL = "bool"
    LIST = "list"
    DICT = "dict"
    AUTO = "auto"  # YAML when it looks like a flow list or mapping, else a string
    OCTAL = "octal"  # file permissions, as for chmod: '0640', '640', '0o640'


S, N, B, L, D, A = Kind.STR, Kind.INT, Kind.BOOL, Kind.LIST, Kind.DICT, Kind.AUTO
KeyPath = tuple[str, ...]
PREFIX = "PATRONI_"

_LOG_KEYS = {
    "TYPE": S, "LEVEL": S, "TRACEBACK_LEVEL": S, "FORMAT": A, "DATEFORMAT": S, "STATIC_FIELDS": D,
    "MAX_QUEUE_SIZE": N, "DIR": S, "MODE": Kind.OCTAL, "FILE_SIZE": N, "FILE_NUM": N, "LOGGERS": D,
    "DEDUPLICATE_HEARTBEAT_LOGS": B,
}  # fmt: skip
_RESTAPI_KEYS = {
    "LISTEN": S, "CONNECT_ADDRESS": S, "CERTFILE": S, "KEYFILE": S, "KEYFILE_PASSWORD": S, "CAFILE": S,
    "CIPHERS": S, "VERIFY_CLIENT": S, "HTTP_EXTRA_HEADERS": D, "HTTPS_EXTRA_HEADERS": D, "ALLOWLIST": L,
    "ALLOWLIST_INCLUDE_MEMBERS": B, "REQUEST_QUEUE_SIZE": N, "SERVER_TOKENS": S,
}  # fmt: skip
_CTL_KEYS = {"INSECURE": B, "CACERT": S, "CERTFILE": S, "KEYFILE": S, "KEYFILE_PASSWORD": S}
_POSTGRESQL_KEYS = ("LISTEN", "CONNECT_ADDRESS", "PROXY_ADDRESS", "CONFIG_DIR", "DATA_DIR", "PGPASS", "BIN_DIR")
_ROLES = ("SUPERUSER", "REPLICATION", "REWIND")
_ROLE_KEYS = (
    "USERNAME", "PASSWORD", "SSLMODE", "SSLKEY", "SSLPASSWORD", "SSLCERT", "SSLROOTCERT", "SSLCRL",
    "SSLCRLDIR", "SSLNEGOTIATION", "GSSENCMODE", "CHANNEL_BINDING",
)  # fmt: skip
_DCS_NAMES = ("ETCD3", "ETCD", "CONSUL", "ZOOKEEPER", "EXHIBITOR", "KUBERNETES")
_DCS_KEYS = {
    "HOST": S, "HOSTS": L, "PORT": N, "URL": S, "PROXY": S, "SRV": S, "SRV_SUFFIX": S, "PROTOCOL": S,
    "USE_PROXIES": B, "CACERT": S, "CERT": S, "KEY": S, "KEY_PASSWORD": S, "VERIFY": B, "TOKEN": S,
    "CHECKS": L, "DC": S, "CONSISTENCY": S, "REGISTER_SERVICE": B, "SERVICE_CHECK_INTERVAL": S,
    "SERVICE_CHECK_TLS_SERVER_NAME": S, "SERVICE_TAGS": L, "NAMESPACE": S, "CONTEXT": S,
    "USE_ENDPOINTS": B, "SCOPE_LABEL": S, "ROLE_LABEL": S, "LEADER_LABEL_VALUE": S,
    "FOLLOWER_LABEL_VALUE": S, "STANDBY_LEADER_LABEL_VALUE": S, "TMP_ROLE_LABEL": S, "POD_IP": S,
    "PORTS": L, "LABELS": D, "BOOTSTRAP_LABELS": D, "BYPASS_API_SERVICE": B, "RETRIABLE_HTTP_CODES": L,
    "USE_SSL": B, "SET_ACLS": D, "AUTH_DATA": D, "USERNAME": S, "PASSWORD": S,
}  # fmt: skip
_RAFT_KEYS = {"SELF_ADDR": S, "BIND_ADDR": S, "PARTNER_ADDRS": L, "DATA_DIR": S, "PASSWORD": S}
_BIN_PREFIX = "PATRONI_POSTGRESQL_BIN_"
_TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "off", "0", "n", "f"})


def _build_rules() -> dict[str, tuple[KeyPath, Kind]]:
    # Insertion order is application order: legacy names first, so the modern name wins when both are set.
    rules: dict[str, tuple[KeyPath, Kind]] = {
        "PATRONI_LOGLEVEL": (("log", "level"), S),
        "PATRONI_LOGFORMAT": (("log", "format"), A),
        "PATRONI_LOG_DATEFMT": (("log", "dateformat"), S),
        "PATRONI_NAME": (("name",), S),
        "PATRONI_NAMESPACE": (("namespace",), S),
        "PATRONI_SCOPE": (("scope",), S),
        "PATRONI_THREAD_POOL_SIZE": (("thread_pool_size",), N),
        "PATRONI_THREAD_STACK_SIZE": (("thread_stack_size",), S),
        "PATRONI_CITUS_GROUP": (("citus", "group"), N),
        "PATRONI_CITUS_DATABASE": (("citus", "database"), S),
    }
    sections: list[tuple[str, dict[str, Kind]]] = [("log", _LOG_KEYS), ("restapi", _RESTAPI_KEYS)]
    sections += [("ctl", _CTL_KEYS), ("raft", _RAFT_KEYS)]
    sections += [(dcs.lower(), _DCS_KEYS) for dcs in _DCS_NAMES]
    for section, keys in sections:
        for key, kind in keys.items():
            rules[f"{PREFIX}{section.upper()}_{key}"] = ((section, key.lower()), kind)
    for section in ("restapi", "ctl"):
        for key in ("USERNAME", "PASSWORD"):
            rules[f"{PREFIX}{section.upper()}_{key}"] = ((section, "authentication", key.lower()), S)
    for key in _POSTGRESQL_KEYS:
        rules[f"{PREFIX}POSTGRESQL_{key}"] = (("postgresql", key.lower()), S)
    for role in _ROLES:
        for key in _ROLE_KEYS:
            rules[f"{PREFIX}{role}_{key}"] = (("postgresql", "authentication", role.lower(), key.lower()), S)
    return rules


_RULES = _build_rules()


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration that the PATRONI_* variables in `environ` describe, as a nested mapping."""
    out: dict[str, Any] = {}
    for var, (path, kind) in _RULES.items():
        if var in environ:
            _set(out, path, parse_value(environ[var], kind))
    for var, value in environ.items():
        binary = var.removeprefix(_BIN_PREFIX)
        if var.startswith(_BIN_PREFIX) and var not in _RULES and binary:
            _set(out, ("postgresql", "bin_name", binary.lower()), value)
    return out


def scrub_patroni_env(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove every PATRONI_* variable (secrets included) so child processes never see them.

    Returns what was removed. The agent calls this once, after `load_local`.
    """
    names = [name for name in environ if name.startswith(PREFIX)]
    return {name: environ.pop(name) for name in names}


def parse_value(text: str, kind: Kind) -> Any:
    """One variable's text -> a value of `kind`, or the text itself when it does not parse."""
    stripped = text.strip()
    if kind is Kind.INT:
        try:
            return int(stripped)
        except ValueError:
            return text
    if kind is Kind.OCTAL:
        try:
            return int(stripped, 8)
        except ValueError:
            return text
    if kind is Kind.BOOL:
        lowered = stripped.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    if kind is Kind.LIST:
        return _parse_list(stripped)
    if kind is Kind.DICT or (kind is Kind.AUTO and stripped[:1] in ("[", "{")):
        parsed = _yaml(stripped)
        return parsed if isinstance(parsed, dict | list) else text
    return text


def _parse_list(text: str) -> Any:
    """'[a, b]', "'a','b'" (Patroni's documented form) or 'a,b' -> a list."""
    parsed = _yaml(text if text.startswith("[") else f"[{text}]")
    if isinstance(parsed, list):
        return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


def _yaml(text: str) -> Any:
    import yaml  # here, not at the top: the agent imports this module (scrub_patroni_env) but parses no YAML

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _set(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value
