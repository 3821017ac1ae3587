"""What pgwarden does with each of Patroni's configuration keys: the one table, and its judge.

Every key of Patroni's configuration, local (the YAML file and `PATRONI_*`) and dynamic (`/config`,
`bootstrap.dcs`), is in exactly one of three classes, decided by the key and, where it matters, by
its value:

* IMPLEMENTED: pgwarden does what Patroni does with it.
* REFUSED: pgwarden does not do it yet, and going on without it could lose data, open a second
  writer or weaken security. `validate-config`, the agent's start, `edit-config` and `PATCH`/`PUT
  /config` all fail with one line naming the key, what is missing and what to do instead; an agent
  never starts half-configured, and one already running keeps the configuration it has.
* HARMLESS: accepted and ignored with a logged warning that names the key, only where ignoring it can
  do none of those things.

A key that is in no Patroni or pgwarden schema is warned of as unknown (a typo must not pass
unnoticed). `docs/compatibility.md` shows this table to users; `tests/unit/test_config_support.py`
checks that every key of Patroni's schema is in it.

Pure and light (no pydantic, no YAML): the agent judges a changed `/config` in-process.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class Support(enum.Enum):
    IMPLEMENTED = "implemented"
    REFUSED = "refused"
    HARMLESS = "harmless"


Judge = Callable[[Any, Mapping[str, Any]], "Support | None"]
"""(the key's value, the whole configuration) -> its class for that value; None: this rule does not
apply to that value, try the next rule for the same path."""


@dataclass(frozen=True)
class KeyRule:
    path: str
    """Dotted key path; `*` stands for any one key (`postgresql.parameters.*`)."""
    support: Support
    note: str = ""
    """REFUSED: what pgwarden does not do yet, then what to do instead. HARMLESS: why ignoring is safe."""
    when: Callable[[Any, Mapping[str, Any]], bool] | None = None
    """The rule applies only to values (given the whole configuration) for which this holds."""
    opaque: bool = False
    """An implemented key whose value is free-form (PostgreSQL parameters, custom tags): not walked."""

    def applies(self, value: Any, root: Mapping[str, Any]) -> bool:
        return self.when is None or self.when(value, root)


@dataclass(frozen=True)
class Verdict:
    path: str
    support: Support | None
    """None: the key is in no schema (unknown)."""
    note: str

    @property
    def message(self) -> str:
        if self.support is Support.REFUSED:
            return f"{self.path}: {self.note}"
        if self.support is Support.HARMLESS:
            return f"{self.path}: {self.note}; ignored"
        return f"{self.path}: not a Patroni or pgwarden setting (a typo?); ignored"


IMPL, REFUSE, HARM = Support.IMPLEMENTED, Support.REFUSED, Support.HARMLESS


# -- value tests ---------------------------------------------------------------------------------------


# Each value test's docstring says, for the compatibility table, which values it admits.


def _is(*values: Any) -> Callable[[Any, Mapping[str, Any]], bool]:
    wanted = {str(v).lower() for v in values}

    def test(value: Any, _root: Mapping[str, Any]) -> bool:
        return str(value).strip().lower() in wanted

    test.__doc__ = " or ".join(f"`{v}`" for v in values)
    return test


def _empty(value: Any, _root: Mapping[str, Any]) -> bool:
    """unset, empty, `false` or `0`"""
    return value is None or value == {} or value == [] or value == "" or value is False or value == 0


def _set(value: Any, root: Mapping[str, Any]) -> bool:
    """set"""
    return not _empty(value, root)


def _mapping(value: Any, _root: Mapping[str, Any]) -> bool:
    """a section (mapping)"""
    return isinstance(value, Mapping)


_SLOT_KEYS = ("slots", "permanent_slots", "permanent_replication_slots")
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # PostgreSQL's rule, as config.dynamic.SLOT_NAME


def _logical_entries(value: Any) -> bool:
    return isinstance(value, Mapping) and any(
        isinstance(spec, Mapping) and str(spec.get("type", "")).strip().lower() == "logical" for spec in value.values())


def _logical_without_wal_level(value: Any, root: Mapping[str, Any]) -> bool:
    """with a `type: logical` entry while `postgresql.parameters.wal_level` is not logical"""
    if not _logical_entries(value):
        return False
    postgresql = root.get("postgresql")
    parameters = postgresql.get("parameters") if isinstance(postgresql, Mapping) else None
    level = parameters.get("wal_level") if isinstance(parameters, Mapping) else None
    return str(level or "replica").strip().lower() != "logical"


def _unreadable_slots(value: Any, _root: Mapping[str, Any]) -> bool:
    """with an entry that is no slot (a bad name, type or cluster_type; logical without database or plugin)"""
    if value is None or value == {}:
        return False
    if not isinstance(value, Mapping):
        return True
    return any(not _SLOT_NAME.match(str(name)) or not _readable_slot(spec) for name, spec in value.items())


def _readable_slot(spec: Any) -> bool:
    if spec is None or spec is False or (not isinstance(spec, bool) and spec in (0, "", {})):
        return True  # a physical slot with the defaults
    if not (isinstance(spec, Mapping) and spec.get("type", "physical") in ("physical", "logical")
            and spec.get("cluster_type") in (None, "primary", "standby")):
        return False
    return spec.get("type") != "logical" or all(
        isinstance(spec.get(key), str) and spec[key].strip() for key in ("database", "plugin"))


def _slot_rules(key: str) -> tuple[KeyRule, ...]:
    """`slots` and its aliases: physical and logical slots implemented."""
    return (
        KeyRule(key, REFUSE, "an entry pgwarden cannot read (a slot name has 1 to 63 characters of a-z, 0-9 and _; "
                "`type` is physical or logical, `cluster_type` primary or standby; a logical slot needs `database` "
                "and `plugin`): fix it; read as absent, it would drop that slot", when=_unreadable_slots),
        KeyRule(key, REFUSE, "logical slots need `postgresql.parameters.wal_level: logical` (in the same dynamic "
                "configuration; PostgreSQL applies it at its next restart): set it, or remove the logical entries",
                when=_logical_without_wal_level),
        KeyRule(key, IMPL, "physical slots are created on the primary and copied to every failover-capable "
                "replica (advanced to the primary's position), so they survive a failover; `cluster_type: standby` "
                "ones only in a standby cluster (by its standby leader), `primary` ones only in a primary cluster. "
                "Logical slots (PostgreSQL 11 to 16) are created on the primary, copied to every failover-capable "
                "replica (the slot's state file, one restart of the replica), advanced there to the "
                "confirmed_flush_lsn the primary publishes and never ahead of it; hot_standby_feedback is forced "
                "on those replicas; a replica whose copies are not ready says so (`logical_slots_ready`) and is "
                "not preferred in a leader race", opaque=True),
    )


_STANDBY_KEYS = frozenset({"host", "port", "primary_slot_name", "create_replica_methods", "restore_command",
                           "archive_cleanup_command", "recovery_min_apply_delay"})
_STANDBY_HOST = re.compile(r"^[A-Za-z0-9._\-:\[\]%/,]{1,255}$")  # as config.dynamic._HOST
_METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # as config.dynamic._METHOD_NAME
_STANDBY_DELAY = re.compile(r"^\s*\d{1,10}\s*(us|ms|s|min|h|d)?\s*$")  # as config.dynamic._APPLY_DELAY


def _unusable_standby(value: Any, _root: Mapping[str, Any]) -> bool:
    """a section pgwarden cannot use"""
    if not isinstance(value, Mapping):
        return True
    host, restore = value.get("host"), value.get("restore_command")
    if not host and not restore:
        return True
    if host is not None and not (isinstance(host, str) and _STANDBY_HOST.match(host)):
        return True
    port = value.get("port", 5432)
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit() \
            or not 1 <= int(port) <= 65535:
        return True
    slot = value.get("primary_slot_name")
    if slot not in (None, "") and not (isinstance(slot, str) and _SLOT_NAME.match(slot)):
        return True
    if any(isinstance(value.get(k), str) and any(c in value[k] for c in "\x00\n\r")
           for k in ("restore_command", "archive_cleanup_command")):
        return True
    delay = value.get("recovery_min_apply_delay")
    if delay not in (None, "") and (isinstance(delay, bool) or not _STANDBY_DELAY.match(str(delay))):
        return True
    methods = value.get("create_replica_methods")
    if methods is not None and not (isinstance(methods, str | list) and all(
            isinstance(m, str) and _METHOD_NAME.match(m.strip()) for m in _names(methods))):
        return True
    return any(key not in _STANDBY_KEYS for key in value)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(part) for part in value]
    return []


def _only_basebackup(value: Any, _root: Mapping[str, Any]) -> bool:
    """`[basebackup]` (or unset)"""
    return value is None or _names(value) in ([], ["basebackup"])


def _bootstrap_method(root: Mapping[str, Any]) -> str:
    bootstrap = root.get("bootstrap")
    method = bootstrap.get("method") if isinstance(bootstrap, Mapping) else None
    return str(method or "initdb")


# -- the table -----------------------------------------------------------------------------------------

_TLS_NOTE = "PostgreSQL connection options for this user (libpq)"
_ROLE_KEYS = ("username", "password", "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl",
              "sslcrldir", "sslnegotiation", "gssencmode", "channel_binding")

_DCS_REFUSAL = ("is not supported by pgwarden yet (etcd v3, etcd v2 and ZooKeeper are); run the cluster on one "
                "of those, or keep Patroni on this cluster for now")

_ETCD_KEYS = ("host", "hosts", "url", "protocol", "username", "user", "password", "cacert", "cert", "key",
              "key_password")
_ZOOKEEPER_KEYS = ("hosts", "use_ssl", "cacert", "cert", "key", "key_password", "verify", "set_acls", "auth_data")


def _etcd_rules(section: str) -> tuple[KeyRule, ...]:
    """`etcd3` (the v3 API) and `etcd` (the v2 API) take the same keys."""
    return (
        KeyRule(section, IMPL),
        *(KeyRule(f"{section}.{key}", IMPL) for key in _ETCD_KEYS),
        *(KeyRule(f"{section}.{key}", REFUSE, "etcd discovery through a proxy or DNS SRV records is not supported "
                  f"yet; list the etcd endpoints in {section}.hosts instead", when=_set)
          for key in ("proxy", "srv", "srv_suffix")),
        *(KeyRule(f"{section}.{key}", IMPL, when=_empty) for key in ("proxy", "srv", "srv_suffix")),
    )


LOCAL_RULES: tuple[KeyRule, ...] = (
    KeyRule("name", IMPL), KeyRule("scope", IMPL), KeyRule("namespace", IMPL),
    KeyRule("thread_pool_size", HARM, "pgwarden serves its REST API on asyncio, without a thread pool"),
    KeyRule("thread_stack_size", HARM, "pgwarden serves its REST API on asyncio, without threads"),
    # log
    KeyRule("log", IMPL),
    *(KeyRule(f"log.{key}", IMPL) for key in ("type", "level", "traceback_level", "format", "dateformat", "dir",
                                              "mode", "file_num", "file_size", "deduplicate_heartbeat_logs")),
    KeyRule("log.max_queue_size", HARM, "pgwarden writes each log record at once, without a queue, so none is "
            "ever dropped"),
    KeyRule("log.static_fields", IMPL, opaque=True),
    KeyRule("log.loggers", IMPL, "as Patroni does; pgwarden's loggers are `pgwarden` and `pgwarden.*` (Patroni's "
            "`patroni.*` names are accepted and change nothing)", opaque=True),
    # restapi
    KeyRule("restapi", IMPL),
    *(KeyRule(f"restapi.{key}", IMPL) for key in ("listen", "connect_address", "authentication",
                                               "authentication.username", "authentication.password",
                                               "certfile", "keyfile", "keyfile_password", "cafile", "ciphers",
                                               "verify_client", "allowlist", "allowlist_include_members",
                                               "request_queue_size")),
    KeyRule("restapi.server_tokens", IMPL, "as Patroni does, naming pgwarden: Original `pgwarden/<version> "
            "Python/<version>`, Minimal `pgwarden/<version>`, ProductOnly `pgwarden`, on every answer"),
    KeyRule("restapi.http_extra_headers", IMPL, opaque=True), KeyRule("restapi.https_extra_headers", IMPL, opaque=True),
    KeyRule("restapi.thread_pool_size", HARM, "pgwarden serves its REST API on asyncio, without a thread pool"),
    # ctl
    KeyRule("ctl", IMPL),
    *(KeyRule(f"ctl.{key}", IMPL) for key in ("authentication", "authentication.username", "authentication.password",
                                           "insecure", "cacert", "certfile", "keyfile", "keyfile_password")),
    # bootstrap
    KeyRule("bootstrap", IMPL),
    KeyRule("bootstrap.dcs", IMPL, opaque=True),  # judged with DYNAMIC_RULES (judge_local)
    KeyRule("bootstrap.method", IMPL, when=_is("initdb")),
    KeyRule("bootstrap.method", IMPL, "a custom method: the section `bootstrap.<method>` gives its `command` (run "
            "without a shell, with `--scope` and `--datadir` unless `no_params`; its other keys as `--key=value`), "
            "then `recovery_conf` (archive recovery until it ends, then promotion to a new timeline) and "
            "`keep_existing_recovery_conf`; a failed command leaves no cluster behind (docs/disaster-recovery.md)"),
    KeyRule("bootstrap.initdb", IMPL, opaque=True),
    KeyRule("bootstrap.post_bootstrap", IMPL), KeyRule("bootstrap.post_init", IMPL),
    KeyRule("bootstrap.pg_hba", IMPL),
    KeyRule("bootstrap.users", HARM, "removed in Patroni 4.0 and not supported; create users in post_bootstrap"),
    KeyRule("bootstrap.*", HARM, "a custom bootstrap method's section that bootstrap.method does not select (the "
            "selected one is used)", when=_mapping),
    # DCS
    *_etcd_rules("etcd3"), *_etcd_rules("etcd"),
    KeyRule("zookeeper", IMPL), *(KeyRule(f"zookeeper.{key}", IMPL) for key in _ZOOKEEPER_KEYS),
    *(KeyRule(name, REFUSE, f"{name} {_DCS_REFUSAL}") for name in ("consul", "exhibitor", "kubernetes", "raft")),
    KeyRule("citus", REFUSE, "Citus clusters are not supported by pgwarden; keep Patroni for Citus"),
    # postgresql
    KeyRule("postgresql", IMPL),
    *(KeyRule(f"postgresql.{key}", IMPL) for key in (
        "listen", "connect_address", "proxy_address", "data_dir", "config_dir", "bin_dir", "pgpass",
        "custom_conf", "authentication", "pg_hba", "pg_ident", "callbacks", "use_unix_socket",
        "use_unix_socket_repl", "pg_ctl_timeout", "use_pg_rewind", "remove_data_directory_on_rewind_failure",
        "remove_data_directory_on_diverged_timelines", "pre_promote", "before_stop")),
    KeyRule("postgresql.bin_name", IMPL, "as Patroni does, except that initdb always runs the `postgres` beside "
            "it (it has no option for another) and pgwarden never runs pg_isready", opaque=True),
    *(KeyRule(f"postgresql.authentication.{role}", IMPL) for role in ("superuser", "replication", "rewind")),
    *(KeyRule(f"postgresql.authentication.{role}.{key}", IMPL) for role in ("superuser", "replication", "rewind")
      for key in _ROLE_KEYS if key != "sslnegotiation"),
    *(KeyRule(f"postgresql.authentication.{role}.sslnegotiation", IMPL, "passed to libpq 17 and newer; left out, "
              "with a warning, where libpq is older and would refuse it (sslmode still decides TLS)")
      for role in ("superuser", "replication", "rewind")),
    *(KeyRule(f"postgresql.callbacks.{key}", IMPL) for key in ("on_start", "on_stop", "on_restart", "on_reload",
                                                           "on_role_change")),
    KeyRule("postgresql.parameters", IMPL, opaque=True),
    *(KeyRule(f"postgresql.{kind}_{role}", IMPL, opaque=True) for kind in ("parameters", "pg_hba", "pg_ident")
      for role in ("primary", "replica", "standby_leader")),
    KeyRule("postgresql.basebackup", IMPL, opaque=True), KeyRule("postgresql.rewind", IMPL, opaque=True),
    KeyRule("postgresql.recovery_conf", IMPL, "written into postgresql.conf (PostgreSQL 12+): a replica restores WAL "
            "from the archive with restore_command when streaming cannot serve it, and streams again after; "
            "primary_conninfo, primary_slot_name, recovery_target_timeline and standby_mode are pgwarden's own "
            "(ignored with a warning)", opaque=True),
    KeyRule("postgresql.create_replica_methods", IMPL, "tried in order until one succeeds; `basebackup` is "
            "pg_basebackup, any other method's section `postgresql.<method>` gives its `command` (run without a "
            "shell with `--scope`, `--role=replica`, `--datadir`, `--connstring` unless `no_params`; its other keys "
            "as `--key=value`), `keep_data` and `no_leader` (a replica with no member running); reinitialize uses "
            "them too"),
    KeyRule("postgresql.replica_method", IMPL, "Patroni's older single method: used when create_replica_methods is "
            "not set"),
    KeyRule("postgresql.use_slots", HARM, "only the dynamic configuration sets use_slots (as in Patroni); set it "
            "with edit-config"),
    KeyRule("postgresql.*", HARM, "a replica creation method's section that create_replica_methods does not use "
            "(the ones it names are used)", when=_mapping),
    # watchdog: every mode, device and driver (default: the Linux watchdog API; testing: Patroni's FIFO)
    KeyRule("watchdog", IMPL, opaque=True),
    # tags
    KeyRule("tags", IMPL),
    *(KeyRule(f"tags.{key}", IMPL) for key in ("nofailover", "failover_priority", "nosync", "sync_priority",
                                            "clonefrom", "noloadbalance", "replicatefrom")),
    KeyRule("tags.nostream", IMPL, "as Patroni does: the replica never streams (no primary_conninfo) and no slot is "
            "kept for it; it replays WAL from the archive with restore_command"),
    KeyRule("tags.*", IMPL, opaque=True),  # custom tags, published and matched by ?tag_ filters
)
"""The local configuration, as Patroni's schema has it (contract 6.2)."""

_CLUSTER_WIDE_IN_LOCAL = ("a cluster-wide setting that Patroni reads only from /config, not from a member's own "
                          "configuration: move it under bootstrap.dcs (a new cluster) or set it with edit-config")

DYNAMIC_RULES: tuple[KeyRule, ...] = (
    *(KeyRule(key, IMPL) for key in (
        "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "maximum_lag_on_syncnode",
        "primary_start_timeout", "master_start_timeout", "primary_stop_timeout", "master_stop_timeout",
        "max_timelines_history", "check_timeline", "synchronous_mode", "synchronous_mode_strict",
        "synchronous_node_count", "pause")),
    KeyRule("member_slots_ttl", IMPL, "a member's slot is kept that long after the member is gone, on the primary "
            "and on every failover-capable replica: like Patroni on PostgreSQL 11 and later, those keep copies of "
            "the other members' slots, advanced to the positions the primary publishes, so a promoted replica "
            "already holds each member's slot and the WAL it still needs"),
    KeyRule("primary_race_backoff", IMPL, when=_empty),
    KeyRule("primary_race_backoff", HARM, "pgwarden races for the leader key at once (the lag limit still "
            "applies: no candidate further behind than maximum_lag_on_failover promotes)"),
    KeyRule("failsafe_mode", IMPL),
    *(rule for key in _SLOT_KEYS for rule in _slot_rules(key)),
    KeyRule("ignore_slots", IMPL, "slots matched are never created nor dropped by pgwarden (besides them, it only "
            "ever drops member slots and permanent slots it manages)", opaque=True),
    KeyRule("standby_cluster", IMPL, when=_empty),
    KeyRule("standby_cluster", REFUSE, "a section pgwarden cannot use (no `host` nor `restore_command`, an unknown "
            "key, a value of the wrong form, or a method name that cannot be a section's): fix it "
            "(`pgwarden validate-config` names the problem); read as absent, this cluster would accept writes",
            when=_unusable_standby),
    KeyRule("standby_cluster", IMPL, "the leader key's holder is the standby leader: it follows the remote (streaming "
            "from host:port through primary_slot_name, and/or restore_command) and never promotes; the first "
            "member copies the remote with its create_replica_methods (basebackup, or methods defined as "
            "postgresql.<name> sections); adding the section demotes a primary cluster, removing it "
            "promotes the standby leader", opaque=True),
    KeyRule("postgresql", IMPL),
    *(KeyRule(f"postgresql.{key}", IMPL) for key in (
        "use_pg_rewind", "use_slots", "pg_hba", "pg_ident", "pg_ctl_timeout",
        "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines")),
    *(KeyRule(f"postgresql.{key}", IMPL, opaque=True)
      for key in ("parameters", "recovery_conf", "basebackup", "rewind")),
    *(KeyRule(f"postgresql.{kind}_{role}", IMPL, opaque=True) for kind in ("parameters", "pg_hba", "pg_ident")
      for role in ("primary", "replica", "standby_leader")),
    *(KeyRule(f"postgresql.{key}", HARM, "a per-member setting, read only from each member's own configuration")
      for key in ("connect_address", "proxy_address", "listen", "config_dir", "data_dir", "pgpass",
                  "authentication")),
    KeyRule("pgwarden", IMPL),
    KeyRule("pgwarden.lease_ttl", IMPL), KeyRule("pgwarden.keepalive_interval", IMPL),
)
"""The dynamic configuration (contract 6.3), plus pgwarden's own `pgwarden` section."""

_TIMING_KEYS = ("ttl", "loop_wait", "retry_timeout")
"""Local values of these win over /config in Patroni (contract 6.1): implemented in layering."""

_SAFETY_KEYS = ("synchronous_mode", "synchronous_mode_strict", "synchronous_node_count", "maximum_lag_on_failover",
                "maximum_lag_on_syncnode", "check_timeline", "failsafe_mode", "standby_cluster", "slots",
                "permanent_slots", "permanent_replication_slots", "pause")
"""Cluster-wide keys that a local file cannot set, and whose being ignored could lose data or open a
second writer: refused there, so nobody believes they are in force."""

LOCAL_TOP_LEVEL_DYNAMIC: tuple[KeyRule, ...] = (
    *(KeyRule(key, IMPL) for key in _TIMING_KEYS),
    *(KeyRule(key, REFUSE, _CLUSTER_WIDE_IN_LOCAL) for key in _SAFETY_KEYS),
    *(KeyRule(key, HARM, _CLUSTER_WIDE_IN_LOCAL.replace(": move", " (move").replace("edit-config", "edit-config)"))
      for key in ("primary_start_timeout", "master_start_timeout", "primary_stop_timeout", "master_stop_timeout",
                  "primary_race_backoff", "max_timelines_history", "member_slots_ttl", "ignore_slots", "pgwarden")),
)
"""Dynamic keys written at the top level of a local file."""


# -- judging a configuration ---------------------------------------------------------------------------


def _match(rules: tuple[KeyRule, ...], path: tuple[str, ...], value: Any, root: Mapping[str, Any]) -> KeyRule | None:
    """The first rule for `path` (exact names before `*`) that applies to `value`."""
    for wildcard in (False, True):
        for rule in rules:
            parts = rule.path.split(".")
            if len(parts) != len(path):
                continue
            if any(p != k and not (wildcard and p == "*") for p, k in zip(parts, path, strict=True)):
                continue
            if wildcard == ("*" in parts) and rule.applies(value, root):
                return rule
    return None


def _walk(rules: tuple[KeyRule, ...], node: Mapping[str, Any], root: Mapping[str, Any],
          prefix: tuple[str, ...]) -> Iterator[Verdict]:
    for key, value in node.items():
        path = (*prefix, str(key))
        rule = _match(rules, path, value, root)
        dotted = ".".join(path)
        if rule is None:
            yield Verdict(dotted, None, "")
        elif rule.support is not Support.IMPLEMENTED:
            yield Verdict(dotted, rule.support, rule.note)
        elif isinstance(value, Mapping) and not rule.opaque:
            yield from _walk(rules, value, root, path)


def _selected_method_section(path: tuple[str, ...], root: Mapping[str, Any]) -> bool:
    """`bootstrap.<name>` / `postgresql.<name>` that is the section of the method in use: its refusal is
    the method's (bootstrap.method / create_replica_methods), not a second line."""
    if path[0] == "bootstrap":
        return path[1] == _bootstrap_method(root)
    postgresql = root.get("postgresql")
    if not isinstance(postgresql, Mapping):
        return False
    return path[1] in (*_names(postgresql.get("create_replica_methods") or postgresql.get("replica_method")),
                       *_standby_methods(root))


def _standby_methods(root: Mapping[str, Any]) -> list[str]:
    """The methods `bootstrap.dcs.standby_cluster` names: their `postgresql.<name>` sections are used too (the
    first member of a standby cluster copies the remote with them)."""
    bootstrap = root.get("bootstrap")
    dcs = bootstrap.get("dcs") if isinstance(bootstrap, Mapping) else None
    standby = dcs.get("standby_cluster") if isinstance(dcs, Mapping) else None
    return _names(standby.get("create_replica_methods")) if isinstance(standby, Mapping) else []


def judge_local(raw: Mapping[str, Any]) -> list[Verdict]:
    """Every key of a local configuration (file merged with `PATRONI_*`) that is not simply implemented.
    `bootstrap.dcs` is a dynamic configuration: `judge_dynamic` judges it."""
    rules = LOCAL_RULES + LOCAL_TOP_LEVEL_DYNAMIC
    return [v for v in _walk(rules, raw, raw, ()) if not _is_method_section(v, raw)]


def _is_method_section(verdict: Verdict, root: Mapping[str, Any]) -> bool:
    path = tuple(verdict.path.split("."))
    return (verdict.support is Support.HARMLESS and len(path) == 2 and path[0] in ("bootstrap", "postgresql")
            and "section" in verdict.note and _selected_method_section(path, root))


def judge_dynamic(raw: Mapping[str, Any]) -> list[Verdict]:
    """Every key of a dynamic configuration (`/config`, `bootstrap.dcs`) that is not simply implemented."""
    return list(_walk(DYNAMIC_RULES, raw, raw, ()))


def refusals(verdicts: list[Verdict]) -> list[str]:
    return [v.message for v in verdicts if v.support is Support.REFUSED]


def warnings(verdicts: list[Verdict]) -> list[str]:
    return [v.message for v in verdicts if v.support is not Support.REFUSED]


def dynamic_refusals(raw: Any) -> list[str]:
    """The refusal lines of a raw `/config` value (nothing for a value that is not a mapping: that one
    is repaired to the defaults by validation.parse_dynamic, with a warning)."""
    return refusals(judge_dynamic(raw)) if isinstance(raw, Mapping) else []


# -- the table for users ------------------------------------------------------------------------------


def compatibility_table() -> str:
    """The table as Markdown (docs/compatibility.md holds it; a test keeps the two equal)."""
    lines: list[str] = []
    for title, rules in (("Local configuration (the YAML file, `PATRONI_*`)", LOCAL_RULES),
                         ("Cluster-wide keys written in a local file", LOCAL_TOP_LEVEL_DYNAMIC),
                         ("Dynamic configuration (`/config`, `bootstrap.dcs`)", DYNAMIC_RULES)):
        lines += [f"### {title}", "", "| key | values | class | what pgwarden does |", "|---|---|---|---|"]
        previous = ""
        for rule in rules:
            if rule.when is not None:
                case = (rule.when.__doc__ or "").strip()
            else:
                case = "any other value" if rule.path == previous else "any"
            note = rule.note or ("as Patroni does" if rule.support is IMPL else "")
            lines.append(f"| `{rule.path}` | {case} | {rule.support.value} | {note} |")
            previous = rule.path
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compatibility_table())
