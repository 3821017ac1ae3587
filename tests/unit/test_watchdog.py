"""The watchdog adapter: the Linux driver against a fake kernel at the system-call boundary (this host
has no watchdog device), the testing driver against real FIFOs, the modes of `Watchdog`, `probe`, and
the kernel stand-in the integration tests use (`tests/support/watchdog_kernel.py`)."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgwarden import watchdog
from pgwarden.watchdog import (
    WDIOC_GETSUPPORT,
    WDIOC_GETTIMEOUT,
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    WDIOF_KEEPALIVEPING,
    WDIOF_MAGICCLOSE,
    WDIOF_SETTIMEOUT,
    ArmResult,
    LinuxDriver,
    Watchdog,
    WatchdogError,
    driver_for,
)  # TestingDriver is used as watchdog.TestingDriver: by its bare name pytest would try to collect it
from tests.support.watchdog_kernel import KernelStandIn

DEVICE = "/dev/watchdog0"
FULL = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING
NAMES = {WDIOC_GETSUPPORT: "GETSUPPORT", WDIOC_SETTIMEOUT: "SETTIMEOUT", WDIOC_GETTIMEOUT: "GETTIMEOUT",
         WDIOC_KEEPALIVE: "KEEPALIVE"}


class FakeKernel:
    """A watchdog device as the kernel presents it: records every system call on it and answers the
    watchdog ioctls. `granularity` rounds a timeout up to a multiple, `max_timeout` caps it."""

    def __init__(self, *, options: int = FULL, identity: bytes = b"fakedog", granularity: int = 1,
                 max_timeout: int = 600, timeout: int = 60, open_errno: int | None = None,
                 failing: dict[int, int] | None = None, file_type: int = stat.S_IFCHR) -> None:
        self.options, self.identity = options, identity
        self.granularity, self.max_timeout, self.timeout = granularity, max_timeout, timeout
        self.open_errno, self.failing, self.file_type = open_errno, failing or {}, file_type
        self.calls: list[tuple[Any, ...]] = []
        self.open_fds: set[int] = set()
        self._next_fd = 100

    def open(self, path: str, flags: int) -> int:
        self.calls.append(("open", path, flags))
        if self.open_errno is not None:
            raise OSError(self.open_errno, os.strerror(self.open_errno), path)
        self._next_fd += 1
        self.open_fds.add(self._next_fd)
        return self._next_fd

    def fstat(self, fd: int) -> os.stat_result:
        return os.stat_result((self.file_type | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def write(self, fd: int, data: bytes) -> int:
        assert fd in self.open_fds
        self.calls.append(("write", bytes(data)))
        return len(data)

    def close(self, fd: int) -> None:
        self.open_fds.remove(fd)
        self.calls.append(("close",))

    def ioctl(self, fd: int, request: int, buffer: bytearray, mutate: bool) -> int:
        assert fd in self.open_fds and mutate
        name = NAMES.get(request, hex(request))
        self.calls.append(("ioctl", name))
        if request in self.failing:
            raise OSError(self.failing[request], os.strerror(self.failing[request]))
        if request == WDIOC_GETSUPPORT:
            buffer[:] = watchdog._INFO.pack(self.options, 0, self.identity)
        elif request == WDIOC_SETTIMEOUT:
            asked = watchdog._INT.unpack(buffer)[0]
            self.timeout = min(-(-asked // self.granularity) * self.granularity, self.max_timeout)
            buffer[:] = watchdog._INT.pack(self.timeout)
        elif request == WDIOC_GETTIMEOUT:
            buffer[:] = watchdog._INT.pack(self.timeout)
        elif request != WDIOC_KEEPALIVE:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        return 0

    def kinds(self) -> list[tuple[Any, ...]]:
        """The calls without open's arguments, for compact assertions."""
        return [c[:1] if c[0] == "open" else c for c in self.calls]


class _FakeOs:
    """`os` as pgwarden.watchdog sees it: the fake kernel's calls, the real module for the rest."""

    def __init__(self, kernel: FakeKernel, access: bool | None = None) -> None:
        self._kernel, self._access = kernel, access

    def __getattr__(self, name: str) -> Any:
        if name in ("open", "write", "close", "fstat"):
            return getattr(self._kernel, name)
        if name == "access" and self._access is not None:
            return lambda path, mode: self._access
        return getattr(os, name)


class _FakeFcntl:
    def __init__(self, kernel: FakeKernel) -> None:
        self.ioctl = kernel.ioctl


def install(monkeypatch: pytest.MonkeyPatch, kernel: FakeKernel) -> FakeKernel:
    monkeypatch.setattr(watchdog, "os", _FakeOs(kernel))
    monkeypatch.setattr(watchdog, "fcntl", _FakeFcntl(kernel))
    return kernel


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    return install(monkeypatch, FakeKernel())


# --- request numbers


def test_request_numbers_match_linux_watchdog_h() -> None:
    assert WDIOC_GETSUPPORT == 0x80285700
    assert WDIOC_KEEPALIVE == 0x80045705
    assert WDIOC_SETTIMEOUT == 0xC0045706
    assert WDIOC_GETTIMEOUT == 0x80045707


def test_request_numbers_on_architectures_with_three_direction_bits() -> None:
    layout = watchdog._ioc_layout("ppc64le")
    assert watchdog._ior("W", 0, 40, layout) == 0x40285700
    assert watchdog._iowr("W", 6, 4, layout) == 0xC0045706
    assert watchdog._ioc_layout("aarch64") == watchdog._ioc_layout("x86_64")


# --- the Linux driver


def test_linux_driver_open_timeout_keepalive_and_magic_close(kernel: FakeKernel) -> None:
    driver = LinuxDriver(DEVICE)
    driver.open()
    assert driver.set_timeout(25) == 25
    driver.keepalive()
    driver.close()
    assert kernel.calls[0] == ("open", DEVICE, os.O_WRONLY)
    assert kernel.kinds() == [("open",), ("ioctl", "GETSUPPORT"), ("ioctl", "SETTIMEOUT"), ("ioctl", "KEEPALIVE"),
                              ("write", b"V"), ("close",)]
    assert kernel.timeout == 25 and not kernel.open_fds


def test_linux_driver_returns_the_timeout_the_device_rounded_to(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeKernel(granularity=4))
    driver = LinuxDriver(DEVICE)
    driver.open()
    assert driver.set_timeout(25) == 28
    driver.close()


def test_linux_driver_reports_a_fixed_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(options=WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING, timeout=30))
    driver = LinuxDriver(DEVICE)
    driver.open()
    assert driver.set_timeout(25) == 30
    assert ("ioctl", "SETTIMEOUT") not in kernel.calls and ("ioctl", "GETTIMEOUT") in kernel.calls
    driver.close()


def test_linux_driver_feeds_by_writing_without_the_keepalive_ioctl(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(options=WDIOF_MAGICCLOSE | WDIOF_SETTIMEOUT))
    driver = LinuxDriver(DEVICE)
    driver.open()
    driver.keepalive()
    driver.close()
    assert kernel.kinds()[-3:] == [("write", b"1"), ("write", b"V"), ("close",)]


def test_linux_driver_refuses_a_device_without_magic_close(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(options=WDIOF_SETTIMEOUT | WDIOF_KEEPALIVEPING, identity=b"oldwdt"))
    with pytest.raises(WatchdogError) as caught:
        LinuxDriver(DEVICE).open()
    assert str(caught.value) == (
        "watchdog device /dev/watchdog0 (oldwdt) does not support magic close: pgwarden could not disarm it "
        "deliberately, and closing it might reset the host or leave it unguarded")
    assert kernel.kinds()[-2:] == [("write", b"V"), ("close",)] and not kernel.open_fds


@pytest.mark.parametrize(("code", "message"), [
    (errno.ENOENT, "watchdog device /dev/watchdog0 does not exist (is a watchdog driver loaded?)"),
    (errno.EACCES, "no permission to open watchdog device /dev/watchdog0 for writing"),
    (errno.EBUSY, "watchdog device /dev/watchdog0 is already open in another process (a watchdog has one user "
                  "at a time)"),
    (errno.EIO, "cannot open watchdog device /dev/watchdog0: Input/output error"),
])
def test_linux_driver_open_failures_name_the_device(monkeypatch: pytest.MonkeyPatch, code: int,
                                                    message: str) -> None:
    install(monkeypatch, FakeKernel(open_errno=code))
    with pytest.raises(WatchdogError) as caught:
        LinuxDriver(DEVICE).open()
    assert str(caught.value) == message


def test_linux_driver_writes_nothing_to_a_device_that_is_not_a_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(failing={WDIOC_GETSUPPORT: errno.ENOTTY}))
    with pytest.raises(WatchdogError) as caught:
        LinuxDriver(DEVICE).open()
    assert str(caught.value) == (
        "/dev/watchdog0 is not a watchdog device (WDIOC_GETSUPPORT): Inappropriate ioctl for device")
    assert kernel.kinds() == [("open",), ("ioctl", "GETSUPPORT"), ("close",)]


def test_linux_driver_writes_nothing_to_a_file_that_is_not_a_character_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(file_type=stat.S_IFBLK))
    with pytest.raises(WatchdogError, match=r"^watchdog device /dev/watchdog0 is not a character device$"):
        LinuxDriver(DEVICE).open()
    assert kernel.kinds() == [("open",), ("close",)]


def test_linux_driver_on_real_files_that_are_not_watchdogs(tmp_path: Path) -> None:
    regular = tmp_path / "watchdog"
    regular.write_bytes(b"data")
    with pytest.raises(WatchdogError, match="is not a character device"):
        LinuxDriver(str(regular)).open()
    assert regular.read_bytes() == b"data"
    with pytest.raises(WatchdogError, match=r"^/dev/null is not a watchdog device"):
        LinuxDriver("/dev/null").open()


def test_linux_driver_ioctl_failures_are_watchdog_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeKernel(failing={WDIOC_SETTIMEOUT: errno.EINVAL, WDIOC_KEEPALIVE: errno.EIO}))
    driver = LinuxDriver(DEVICE)
    driver.open()
    with pytest.raises(WatchdogError, match=r"^cannot set the timeout of watchdog device /dev/watchdog0: Invalid"):
        driver.set_timeout(25)
    with pytest.raises(WatchdogError, match=r"^cannot feed watchdog device /dev/watchdog0: Input/output error$"):
        driver.keepalive()
    driver.close()


def test_linux_driver_close_never_raises(kernel: FakeKernel) -> None:
    driver = LinuxDriver(DEVICE)
    driver.close()  # never opened
    driver.open()

    def broken(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, "Input/output error")

    kernel.write = broken  # type: ignore[method-assign]
    driver.close()
    assert not kernel.open_fds


def test_driver_for_names() -> None:
    assert isinstance(driver_for("default", DEVICE), LinuxDriver)
    assert isinstance(driver_for("testing", DEVICE), watchdog.TestingDriver)
    with pytest.raises(WatchdogError, match="unknown watchdog driver 'softdog'"):
        driver_for("softdog", DEVICE)


# --- the modes


def test_mode_off_opens_nothing(kernel: FakeKernel) -> None:
    dog = Watchdog("off", DEVICE, "default")
    assert dog.arm(25) == ArmResult(True)
    assert dog.keepalive() is True
    dog.disarm()
    assert not dog.armed and dog.timeout is None and kernel.calls == []


def test_unknown_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown watchdog mode 'on'"):
        Watchdog("on", DEVICE, "default")


@pytest.mark.parametrize("mode", ["automatic", "required"])
def test_arm_is_idempotent(kernel: FakeKernel, mode: str) -> None:
    dog = Watchdog(mode, DEVICE, "default")
    assert dog.arm(25) == ArmResult(True, timeout=25)
    assert dog.armed and dog.timeout == 25
    opened = len(kernel.calls)
    assert dog.arm(25) == ArmResult(True, timeout=25)
    assert kernel.kinds()[opened:] == [("ioctl", "KEEPALIVE")]


def test_arm_with_another_timeout_sets_it(kernel: FakeKernel) -> None:
    dog = Watchdog("required", DEVICE, "default")
    dog.arm(25)
    armed = len(kernel.calls)
    assert dog.arm(13) == ArmResult(True, timeout=13)
    assert kernel.kinds()[armed:] == [("ioctl", "SETTIMEOUT"), ("ioctl", "KEEPALIVE")]
    assert dog.timeout == 13 and kernel.timeout == 13


def test_a_failed_arm_closes_what_it_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(failing={WDIOC_SETTIMEOUT: errno.EINVAL}))
    dog = Watchdog("automatic", DEVICE, "default")
    result = dog.arm(25)
    assert not result.ok and result.message.startswith("cannot set the timeout of watchdog device /dev/watchdog0")
    assert dog.last_error == result.message
    assert not dog.armed and not kernel.open_fds and kernel.kinds()[-2:] == [("write", b"V"), ("close",)]


def test_an_open_failure_is_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeKernel(open_errno=errno.ENOENT))
    result = Watchdog("required", DEVICE, "default").arm(25)
    assert result == ArmResult(False, "watchdog device /dev/watchdog0 does not exist (is a watchdog driver loaded?)")


def test_a_shorter_timeout_than_asked_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeKernel(max_timeout=20))
    dog = Watchdog("required", DEVICE, "default")
    assert dog.arm(25) == ArmResult(True, timeout=20)
    assert dog.arm(25) == ArmResult(True, timeout=20)  # asked for the same again: only fed


def test_a_longer_timeout_fails_when_required_and_warns_when_automatic(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel(granularity=4))
    expected = ("watchdog device /dev/watchdog0 uses a timeout of 28 s, longer than the 25 s asked for: it "
                "would reset a frozen host only after its leader lease expired")
    required = Watchdog("required", DEVICE, "default")
    assert required.arm(25) == ArmResult(False, expected, 28)
    assert not required.armed and not kernel.open_fds
    automatic = Watchdog("automatic", DEVICE, "default")
    assert automatic.arm(25) == ArmResult(True, expected, 28)
    assert automatic.armed and automatic.timeout == 28
    automatic.disarm()


def test_a_failed_rearm_leaves_the_device_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install(monkeypatch, FakeKernel())
    dog = Watchdog("required", DEVICE, "default")
    dog.arm(25)
    kernel.failing[WDIOC_SETTIMEOUT] = errno.EINVAL
    result = dog.arm(13)
    assert not result.ok and result.timeout == 25
    assert dog.armed and dog.timeout == 25 and kernel.open_fds
    del kernel.failing[WDIOC_SETTIMEOUT]
    assert dog.arm(13) == ArmResult(True, timeout=13)  # the next arm tries again


def test_a_too_short_timeout_opens_nothing(kernel: FakeKernel) -> None:
    result = Watchdog("required", DEVICE, "default").arm(0)
    assert result == ArmResult(False, "a watchdog timeout must be at least 1 second, not 0")
    assert kernel.calls == []


def test_disarm_is_a_magic_close(kernel: FakeKernel) -> None:
    dog = Watchdog("required", DEVICE, "default")
    dog.disarm()  # not armed: nothing
    assert kernel.calls == []
    dog.arm(25)
    dog.disarm()
    assert kernel.kinds()[-2:] == [("write", b"V"), ("close",)]
    assert not dog.armed and dog.timeout is None and not kernel.open_fds
    dog.arm(25)  # armed again after a disarm: opened again
    assert kernel.kinds().count(("open",)) == 2


def test_keepalive(kernel: FakeKernel) -> None:
    dog = Watchdog("required", DEVICE, "default")
    assert dog.keepalive() is True and kernel.calls == []  # not armed: nothing to feed
    dog.arm(25)
    assert dog.keepalive() is True and kernel.calls[-1] == ("ioctl", "KEEPALIVE")
    kernel.failing[WDIOC_KEEPALIVE] = errno.EIO
    assert dog.keepalive() is False
    assert dog.last_error == "cannot feed watchdog device /dev/watchdog0: Input/output error"


def test_unknown_driver_matters_only_when_a_device_is_needed(kernel: FakeKernel) -> None:
    assert Watchdog("off", DEVICE, "softdog").arm(25).ok
    required = Watchdog("required", DEVICE, "softdog")
    result = required.arm(25)
    assert not result.ok and result.message.startswith("unknown watchdog driver 'softdog'")
    assert required.probe() == result.message
    assert kernel.calls == []


# --- probe


def test_probe_of_the_linux_driver(tmp_path: Path) -> None:
    assert Watchdog("required", "/dev/null", "default").probe() is None  # a writable character device
    missing = str(tmp_path / "watchdog")
    assert Watchdog("required", missing, "default").probe() == f"watchdog device {missing} does not exist"
    regular = tmp_path / "file"
    regular.touch()
    assert Watchdog("required", str(regular), "default").probe() == (
        f"watchdog device {regular} is not a character device")
    for mode in ("automatic", "off"):
        assert Watchdog(mode, missing, "default").probe() is None


def test_probe_of_a_device_this_user_cannot_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, for whom os.access always answers yes: the answer is faked.
    monkeypatch.setattr(watchdog, "os", _FakeOs(FakeKernel(), access=False))
    assert Watchdog("required", "/dev/null", "default").probe() == (
        "watchdog device /dev/null is not writable by this user")
    assert Watchdog("automatic", "/dev/null", "default").probe() is None


def test_probe_of_the_testing_driver(fifo: Path, tmp_path: Path) -> None:
    assert Watchdog("required", str(fifo), "testing").probe() is None
    assert Watchdog("required", "/dev/null", "testing").probe() == "watchdog device /dev/null is not a FIFO"
    missing = tmp_path / "none"
    assert Watchdog("required", str(missing), "testing").probe() == f"watchdog device {missing} does not exist"


def test_probe_opens_nothing(kernel: FakeKernel) -> None:
    assert Watchdog("required", "/dev/null", "default").probe() is None
    assert kernel.calls == []


def test_probe_of_an_armed_watchdog(kernel: FakeKernel) -> None:
    dog = Watchdog("required", DEVICE, "default")  # DEVICE does not exist here, but the fake opens it
    dog.arm(25)
    assert dog.probe() is None


# --- the testing driver on a real FIFO


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "watchdog.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def reader(fifo: Path) -> Iterator[int]:
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    yield fd
    os.close(fd)


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_testing_driver_protocol_bytes(fifo: Path, reader: int) -> None:
    driver = watchdog.TestingDriver(str(fifo))
    driver.open()
    assert _drain(reader) == b"C"
    assert driver.set_timeout(25) == 25
    assert _drain(reader) == b"timeout=25\n"
    driver.keepalive()
    assert _drain(reader) == b"1"
    driver.close()
    assert _drain(reader) == b"V"


def test_testing_driver_without_a_reader(fifo: Path) -> None:
    with pytest.raises(WatchdogError) as caught:
        watchdog.TestingDriver(str(fifo)).open()
    assert str(caught.value) == f"no reader on the testing watchdog FIFO {fifo}"
    result = Watchdog("required", str(fifo), "testing").arm(25)
    assert result == ArmResult(False, f"no reader on the testing watchdog FIFO {fifo}")


def test_testing_driver_never_blocks_on_a_full_fifo(fifo: Path, reader: int) -> None:
    driver = watchdog.TestingDriver(str(fifo))
    driver.open()
    with pytest.raises(WatchdogError, match="is full"):
        for _ in range(1 << 20):
            driver.keepalive()
    driver.close()


def test_testing_driver_refuses_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"data")
    with pytest.raises(WatchdogError, match=r"is not a FIFO$"):
        watchdog.TestingDriver(str(path)).open()
    assert path.read_bytes() == b"data"


def test_watchdog_on_the_testing_driver(fifo: Path, reader: int) -> None:
    dog = Watchdog("required", str(fifo), "testing")
    assert dog.arm(25) == ArmResult(True, timeout=25)
    assert dog.arm(25).ok and dog.arm(13).ok and dog.keepalive()
    dog.disarm()
    assert _drain(reader) == b"Ctimeout=25\n11timeout=13\n11V"


# --- the kernel stand-in


class _Resets:
    """A reset callback that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.calls += 1


def test_stand_in_resets_an_unfed_watchdog_once(tmp_path: Path) -> None:
    resets = _Resets()
    path = tmp_path / "wd"
    with KernelStandIn(path, resets) as kernel:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 and stat.S_ISFIFO(path.stat().st_mode)
        dog = Watchdog("required", str(path), "testing")
        armed_at = time.monotonic()
        assert dog.arm(1).ok
        assert kernel.wait_for("reset", 2.5)
        reset_at = next(t for t, kind, _ in kernel.events() if kind == "reset")
        assert 0.9 <= reset_at - armed_at < 2.0
        assert resets.calls == 1 and kernel.resets == 1 and not kernel.armed
        assert not kernel.wait_for("reset", 1.5, count=2)  # the reset host holds no watchdog
        assert resets.calls == 1
        assert [(kind, value) for _, kind, value in kernel.events()] == [
            ("open", None), ("timeout", 1), ("keepalive", None), ("reset", 1)]
        dog.disarm()
    assert not path.exists()


def test_stand_in_does_not_reset_a_fed_watchdog(tmp_path: Path) -> None:
    resets = _Resets()
    with KernelStandIn(tmp_path / "wd", resets) as kernel:
        dog = Watchdog("required", str(tmp_path / "wd"), "testing")
        assert dog.arm(1).ok
        pace = threading.Event()  # never set: its wait paces the feeding like the agent's keepalive task
        for _ in range(8):
            pace.wait(0.3)
            assert dog.keepalive()
        assert kernel.wait_for("keepalive", 2, count=9)  # the arm's keepalive and 8 more, all read
        assert kernel.armed and kernel.last_timeout == 1
        assert resets.calls == 0 and kernel.resets == 0
        dog.disarm()
        assert kernel.wait_for("close", 2)


def test_stand_in_magic_close_disarms_and_an_open_rearms(tmp_path: Path) -> None:
    resets = _Resets()
    path = tmp_path / "wd"
    with KernelStandIn(path, resets) as kernel:
        dog = Watchdog("required", str(path), "testing")
        assert dog.arm(1).ok
        dog.disarm()
        assert kernel.wait_for("close", 2) and not kernel.armed
        assert not kernel.wait_for("reset", 1.5)
        driver = watchdog.TestingDriver(str(path))
        driver.open()  # the last timeout still holds, as the kernel's does
        assert kernel.wait_for("open", 2, count=2) and kernel.armed
        assert kernel.wait_for("reset", 2.5) and resets.calls == 1
        driver.close()


def test_stand_in_keeps_a_watchdog_closed_without_v_armed(tmp_path: Path) -> None:
    resets = _Resets()
    path = tmp_path / "wd"
    with KernelStandIn(path, resets) as kernel:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"Ctimeout=1\n")
        os.close(fd)  # an agent killed: no magic close
        assert kernel.wait_for("reset", 2.5) and resets.calls == 1


def test_stand_in_survives_a_failing_callback_and_reads_split_lines(tmp_path: Path) -> None:
    def boom() -> None:
        raise ProcessLookupError("gone")

    path = tmp_path / "wd"
    with KernelStandIn(path, boom) as kernel:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"Ctime")
        assert kernel.wait_for("open", 2)
        os.write(fd, b"out=1\nx")
        assert kernel.wait_for("reset", 2.5)
        assert [kind for _, kind, _ in kernel.events()] == ["open", "timeout", "unknown", "reset"]
        assert len(kernel.callback_errors) == 1
        os.close(fd)
