"""The steps of a standby cluster (`standby_cluster`): the standby leader is configured, started and
re-pointed towards the remote primary, and a new standby cluster's first member copies the remote."""

from __future__ import annotations

from dataclasses import replace

from pgwarden.core.actions import BootstrapStandby, Follow, Restart, StartPostgres
from pgwarden.core.snapshot import ActionKind, HaSettings, StandbyCluster
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import BASEBACKUP, ReplicaMethod, remote_upstream
from pgwarden.model import ClusterView, Member

from .script import Script, context

REMOTE = StandbyCluster(host="10.0.0.9", port=5433, primary_slot_name="site_b",
                        restore_command="cp /archive/%f %p", recovery_min_apply_delay="5min")
SETTINGS = HaSettings(lease_ttl=7, ttl=30, standby_cluster=REMOTE)
CLUSTER = ClusterView(scope="b", members=(Member("n2", conn_url="postgres://127.0.0.2:5432/postgres"),))
FAILED = fx.Result(False, "it failed", "failed")


def test_the_remote_upstream_carries_slot_and_recovery_settings() -> None:
    up = remote_upstream(SETTINGS)
    assert up is not None and (up.member, up.host, up.port) == (REMOTE.follow_name, "10.0.0.9", 5433)
    assert up.remote == fx.RemoteFollow("site_b", (("restore_command", "cp /archive/%f %p"),
                                                   ("recovery_min_apply_delay", "5min")))
    assert remote_upstream(HaSettings()) is None


def test_the_standby_leader_starts_following_the_remote() -> None:
    script = Script()
    outcome = script.run(StartPostgres(role="replica", follow=REMOTE.follow_name), context(CLUSTER, settings=SETTINGS))
    assert outcome.ok
    (written,) = script.of(fx.WritePgConfig)
    assert written.role == "replica" and written.upstream == remote_upstream(SETTINGS)


def test_a_new_standby_leader_is_re_pointed_at_the_remote() -> None:
    script = Script()
    outcome = script.run(Follow(leader=REMOTE.follow_name), context(CLUSTER, settings=SETTINGS))
    assert outcome.ok and script.of(fx.FollowUpstream) == [fx.FollowUpstream(remote_upstream(SETTINGS))]  # type: ignore[arg-type]


def test_a_restart_of_the_standby_leader_keeps_the_remote() -> None:
    script = Script()
    script.run(Restart(role="replica", follow=REMOTE.follow_name), context(CLUSTER, settings=SETTINGS))
    assert script.of(fx.WritePgConfig)[0].upstream == remote_upstream(SETTINGS)


def test_members_are_still_followed_by_name() -> None:
    script = Script()
    script.run(StartPostgres(role="replica", follow="n2"), context(CLUSTER, settings=SETTINGS))
    assert script.of(fx.WritePgConfig)[0].upstream == fx.Upstream("n2", "127.0.0.2", 5432)


def test_a_failed_copy_is_undone_and_initialize_released() -> None:
    script = Script(answers={fx.Basebackup: FAILED})
    outcome = script.run(BootstrapStandby(), context(None, settings=SETTINGS))
    assert script.kinds() == ["WriteInitialize", "InspectDataDir", "Basebackup", "StopPg", "UndoBootstrap",
                              "CancelInitialization"]
    assert not outcome.ok and outcome.action == ActionKind.BOOTSTRAP
    assert outcome.detail == "standby leader bootstrap failed at copying the remote primary: failed"


def test_the_remote_is_copied_with_the_standby_clusters_methods_in_order() -> None:
    """`standby_cluster.create_replica_methods: [pgbackrest, basebackup]`: the custom method gets the remote
    as its source; when it fails, what it left is removed and pg_basebackup copies the remote."""
    script = Script(answers={fx.RunReplicaMethod: FAILED})
    ctx = replace(context(None, settings=SETTINGS), standby_methods=(ReplicaMethod("pgbackrest"), BASEBACKUP))
    outcome = script.run(BootstrapStandby(), ctx)
    ran = script.of(fx.RunReplicaMethod)
    assert [r.method for r in ran] == ["pgbackrest"] and ran[0].source is not None
    assert ran[0].source.host == script.of(fx.Basebackup)[0].upstream.host
    assert script.kinds().index("EmptyDataDir") < script.kinds().index("Basebackup")
    assert outcome.ok, outcome.detail


def test_a_standby_cluster_without_host_cannot_be_copied() -> None:
    settings = HaSettings(standby_cluster=StandbyCluster(restore_command="cp /archive/%f %p"))
    script = Script()
    outcome = script.run(BootstrapStandby(), context(None, settings=settings))
    assert not script.of(fx.Basebackup) and not outcome.ok
    assert "standby_cluster has no host to copy from" in outcome.detail


def test_the_bootstrap_race_lost() -> None:
    script = Script(answers={fx.WriteInitialize: False})
    outcome = script.run(BootstrapStandby(), context(None, settings=SETTINGS))
    assert outcome.action == ActionKind.LOST_INITIALIZE_RACE and script.kinds() == ["WriteInitialize"]


def test_a_remote_restored_by_a_backup_tool_is_prepared_before_it_is_configured() -> None:
    """`standby_cluster` with `restore_command` only: the `no_leader` method restores the remote's backup,
    whose own recovery settings then go, before the standby leader's configuration is written."""
    settings = HaSettings(standby_cluster=StandbyCluster(restore_command="cp /archive/%f %p",
                                                         create_replica_methods=("pgbackrest",)))
    script = Script()
    ctx = replace(context(None, settings=settings), standby_methods=(ReplicaMethod("pgbackrest", no_leader=True),))
    outcome = script.run(BootstrapStandby(), ctx)
    assert outcome.ok, outcome.detail
    assert script.of(fx.RunReplicaMethod)[0].source is None
    kinds = script.kinds()
    assert kinds.index("RunReplicaMethod") < kinds.index("SanitizeRestored") < kinds.index("WritePgConfig")
    assert script.of(fx.WritePgConfig)[0].upstream == remote_upstream(settings)
