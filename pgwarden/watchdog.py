"""The watchdog (Patroni's `watchdog:` section): a device that resets the host unless it is fed.

The agent arms it before a promotion, feeds it after each successful lease renewal, and disarms it with
a magic close at the safepoint of a demotion or a shutdown. If the agent freezes (or dies) while armed,
the device resets the host before the leader lease can pass to another member, so a frozen primary
never keeps accepting writes next to a new one.

Two drivers, as Patroni's: `default` is a Linux watchdog device (`/dev/watchdog`) through the kernel's
watchdog API; `testing` writes a small text protocol into a FIFO that a test's stand-in for the kernel
reads (`tests/support/watchdog_kernel.py`). `Watchdog` puts the modes (off, automatic, required) on
top of one driver. Every call is a quick system call on a file descriptor, so the agent makes them
synchronously; expected failures are `WatchdogError` (drivers) or values (`Watchdog`), with messages
that name the device and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import platform
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

MODES = ("off", "automatic", "required")
DRIVERS = ("default", "testing")


class WatchdogError(Exception):
    """A watchdog device that cannot be opened, configured or fed (the message is safe for logs)."""


class Driver(Protocol):
    """One watchdog device."""

    def open(self) -> None:
        """Open the device, which arms it; WatchdogError if it cannot be."""

    def set_timeout(self, seconds: int) -> int:
        """Ask for a timeout; the timeout the device actually uses. WatchdogError if it cannot be set."""

    def keepalive(self) -> None:
        """Feed the device; WatchdogError if it cannot be fed."""

    def close(self) -> None:
        """Magic close: disarm and close the device. Never raises."""


# --- Linux ioctl request numbers (linux/watchdog.h), built like the kernel's _IOR/_IOWR macros.


@dataclass(frozen=True, slots=True)
class _IocLayout:
    """How an architecture packs an ioctl request: the widths of the size field and the direction bits."""

    size_bits: int
    read: int
    write: int


# asm-generic/ioctl.h (x86, arm, arm64, riscv, s390, ...); powerpc, mips, sparc and alpha have a 13-bit
# size and three direction bits of their own. A wrong number would not do harm (a watchdog answers
# ENOTTY to an unknown request), but it would call a working watchdog "not a watchdog device".
_GENERIC_IOC = _IocLayout(size_bits=14, read=2, write=1)
_OLD_IOC = _IocLayout(size_bits=13, read=2, write=4)
_OLD_IOC_MACHINES = ("ppc", "powerpc", "mips", "sparc", "alpha")


def _ioc_layout(machine: str) -> _IocLayout:
    return _OLD_IOC if machine.lower().startswith(_OLD_IOC_MACHINES) else _GENERIC_IOC


def _ioc(direction: int, kind: str, number: int, size: int, layout: _IocLayout) -> int:
    """The kernel's _IOC(dir, type, nr, size): nr in bits 0-7, type in 8-15, size from 16, dir above it."""
    if not 0 <= size < 1 << layout.size_bits:
        raise ValueError(f"ioctl argument size {size} does not fit")
    return (direction << (16 + layout.size_bits)) | (size << 16) | (ord(kind) << 8) | number


def _ior(kind: str, number: int, size: int, layout: _IocLayout) -> int:
    return _ioc(layout.read, kind, number, size, layout)


def _iowr(kind: str, number: int, size: int, layout: _IocLayout) -> int:
    return _ioc(layout.read | layout.write, kind, number, size, layout)


_INFO = struct.Struct("=II32s")  # struct watchdog_info: options, firmware_version, identity
_INT = struct.Struct("=i")
_LAYOUT = _ioc_layout(platform.machine())
WDIOC_GETSUPPORT = _ior("W", 0, _INFO.size, _LAYOUT)
WDIOC_KEEPALIVE = _ior("W", 5, _INT.size, _LAYOUT)
WDIOC_SETTIMEOUT = _iowr("W", 6, _INT.size, _LAYOUT)
WDIOC_GETTIMEOUT = _ior("W", 7, _INT.size, _LAYOUT)

WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_KEEPALIVEPING = 0x8000

_OPEN_PROBLEMS = {
    errno.ENOENT: "{name} does not exist (is a watchdog driver loaded?)",
    errno.EACCES: "no permission to open {name} for writing",
    errno.EPERM: "no permission to open {name} for writing",
    errno.EBUSY: "{name} is already open in another process (a watchdog has one user at a time)",
}


def _reason(exc: OSError) -> str:
    """The errno's text only: an OSError's own text may repeat the path, or one the caller did not give."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


class _DeviceFile:
    """The file descriptor of an open device: writes that never block for long, and the magic close."""

    WHAT: ClassVar[str] = "watchdog device"
    FILE_TYPE: ClassVar[int] = stat.S_IFCHR  # what the path must be: nothing is written to another kind of file
    KIND: ClassVar[str] = "a character device"
    OPEN_PROBLEMS: ClassVar[Mapping[int, str]] = _OPEN_PROBLEMS

    def __init__(self, device: str) -> None:
        self.device = device
        self._fd: int | None = None

    @property
    def _name(self) -> str:
        return f"{self.WHAT} {self.device}"

    def _open_fd(self, flags: int) -> int:
        """Open the device; WatchdogError if that fails or the path is another kind of file (a
        misconfigured path must not get a byte written to it, a disk's first sector least of all)."""
        try:
            fd = os.open(self.device, flags)
        except OSError as exc:
            known = self.OPEN_PROBLEMS.get(exc.errno or 0)
            problem = known.format(name=self._name) if known else f"cannot open {self._name}: {_reason(exc)}"
            raise WatchdogError(problem) from None
        try:
            is_kind = stat.S_IFMT(os.fstat(fd).st_mode) == self.FILE_TYPE
        except OSError:
            is_kind = False
        if not is_kind:
            _close_quietly(fd)
            raise WatchdogError(f"{self._name} is not {self.KIND}")
        self._fd = fd
        return fd

    def _require_fd(self) -> int:
        if self._fd is None:
            raise WatchdogError(f"{self._name} is not open")
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._require_fd()
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            raise WatchdogError(f"{self._name} is full (nobody reads it)") from None
        except OSError as exc:
            raise WatchdogError(f"cannot write to {self._name}: {_reason(exc)}") from None
        if written != len(data):  # the writes are a few bytes, below PIPE_BUF: all or nothing
            raise WatchdogError(f"short write to {self._name}")

    def close(self) -> None:
        """Magic close: 'V' as the last byte written tells the kernel this close is deliberate; without it
        (a crash) a watchdog with magic close stays armed and resets the host."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # A failed write leaves the device armed, to reset the host: the safe side of a failed disarm.
        with contextlib.suppress(OSError):
            os.write(fd, b"V")
        _close_quietly(fd)

    def _abandon(self) -> None:
        """Close without a byte written: the device turned out not to be a watchdog."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class LinuxDriver(_DeviceFile):
    """A Linux watchdog device (`/dev/watchdog`, `/dev/watchdogN`) through the kernel's watchdog API.

    Only a device with magic close is used: without it, what a close does is the driver's choice, and
    with the kernel's common watchdog code any close disarms it, so an agent killed while leading would
    leave its host unguarded."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self._options = 0

    def open(self) -> None:
        if self._fd is not None:
            return
        # Opening starts the watchdog; os.open's descriptors are close-on-exec, so PostgreSQL and other
        # children never inherit (and keep alive) the agent's hold on it.
        fd = self._open_fd(os.O_WRONLY)
        info = bytearray(_INFO.size)
        try:
            self._ioctl(fd, WDIOC_GETSUPPORT, info, f"{self.device} is not a watchdog device (WDIOC_GETSUPPORT)")
        except WatchdogError:
            self._abandon()
            raise
        try:
            self._options = self._check_support(info)
        except WatchdogError:
            self.close()  # a watchdog: the magic close disarms it where it can be
            raise

    def _check_support(self, info: bytearray) -> int:
        """The device's options (struct watchdog_info); WatchdogError for a device without magic close."""
        options, _firmware, raw_identity = _INFO.unpack(info)
        identity = raw_identity.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        if not options & WDIOF_MAGICCLOSE:
            name = f" ({identity})" if identity else ""
            raise WatchdogError(
                f"{self._name}{name} does not support magic close: pgwarden could not disarm it "
                "deliberately, and closing it might reset the host or leave it unguarded")
        return int(options)

    def set_timeout(self, seconds: int) -> int:
        fd = self._require_fd()
        value = bytearray(_INT.pack(seconds))
        if self._options & WDIOF_SETTIMEOUT:
            # The kernel writes back the timeout it set: drivers round to what their hardware can do.
            self._ioctl(fd, WDIOC_SETTIMEOUT, value, f"cannot set the timeout of {self._name}")
        else:  # a fixed timeout: report it, the caller judges it
            self._ioctl(fd, WDIOC_GETTIMEOUT, value, f"cannot read the timeout of {self._name}")
        actual: int = _INT.unpack(value)[0]
        return actual

    def keepalive(self) -> None:
        fd = self._require_fd()
        if not self._options & WDIOF_KEEPALIVEPING:
            self._write(b"1")  # any byte but 'V' feeds a watchdog
            return
        self._ioctl(fd, WDIOC_KEEPALIVE, bytearray(_INT.size), f"cannot feed {self._name}")

    def _ioctl(self, fd: int, request: int, buffer: bytearray, problem: str) -> None:
        """The request on the device, which reads and writes `buffer`; WatchdogError `problem: <reason>`."""
        try:
            fcntl.ioctl(fd, request, buffer, True)
        except OSError as exc:
            raise WatchdogError(f"{problem}: {_reason(exc)}") from None


class TestingDriver(_DeviceFile):
    """A FIFO read by a test's stand-in for the kernel (Patroni's `testing` driver): `C` on open,
    `timeout=<seconds>\\n`, `1` per keepalive, `V` on a magic close."""

    WHAT: ClassVar[str] = "testing watchdog FIFO"
    FILE_TYPE: ClassVar[int] = stat.S_IFIFO
    KIND: ClassVar[str] = "a FIFO"
    OPEN_PROBLEMS: ClassVar[Mapping[int, str]] = {**_OPEN_PROBLEMS, errno.ENXIO: "no reader on the {name}"}

    def open(self) -> None:
        if self._fd is not None:
            return
        # Nonblocking: opening a FIFO nobody reads fails at once (ENXIO) instead of hanging the agent, and
        # a full FIFO fails a write instead of stalling the HA loop.
        self._open_fd(os.O_WRONLY | os.O_NONBLOCK)
        try:
            self._write(b"C")
        except WatchdogError:
            self.close()
            raise

    def set_timeout(self, seconds: int) -> int:
        self._write(f"timeout={seconds}\n".encode("ascii"))
        return seconds

    def keepalive(self) -> None:
        self._write(b"1")


def driver_for(driver: str, device: str) -> Driver:
    """The driver named by `watchdog.driver`; WatchdogError for a name pgwarden does not know."""
    if driver == "default":
        return LinuxDriver(device)
    if driver == "testing":
        return TestingDriver(device)
    raise WatchdogError(f"unknown watchdog driver {driver!r} (expected one of: {', '.join(DRIVERS)})")


def _device_problem(driver: str, device: str) -> str | None:
    """Why `device` could not be opened for writing, checked without opening (which would arm it)."""
    expected = LinuxDriver if driver == "default" else TestingDriver
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        return f"watchdog device {device} does not exist"
    except OSError as exc:
        return f"cannot check the watchdog device {device}: {_reason(exc)}"
    if stat.S_IFMT(mode) != expected.FILE_TYPE:
        return f"watchdog device {device} is not {expected.KIND}"
    if not os.access(device, os.W_OK):
        return f"watchdog device {device} is not writable by this user"
    return None


@dataclass(frozen=True, slots=True)
class ArmResult:
    """What `Watchdog.arm` achieved. `ok` with a `message`: armed, but the message deserves a warning
    (mode automatic with a device whose timeout is longer than the one asked for)."""

    ok: bool
    message: str = ""  # why not, for "watchdog could not be activated: <message>"
    timeout: int | None = None  # the timeout the device uses, when known


class Watchdog:
    """The modes on top of one driver. `off`: never touches a device. `automatic`: arms when it can,
    and a failure is the caller's warning. `required`: the caller must not lead without it, and a
    device whose timeout is longer than asked for (it would reset the host after the lease passed to
    another member) is a failure. Synchronous: every call is a quick, non-blocking system call."""

    def __init__(self, mode: str, device: str, driver: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown watchdog mode {mode!r} (expected one of: {', '.join(MODES)})")
        self.mode = mode
        self.device = device
        self.driver_name = driver
        self.last_error: str | None = None  # why the last arm or keepalive failed, for the caller's log
        self._driver: Driver | None = None
        self._driver_error: str | None = None
        try:
            self._driver = driver_for(driver, device)
        except WatchdogError as exc:  # only an error when the mode needs a device: reported by arm/probe
            self._driver_error = str(exc)
        self._armed = False
        self._requested: int | None = None  # the timeout asked for: an arm with it again only feeds
        self._timeout: int | None = None  # the timeout the device uses

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def timeout(self) -> int | None:
        """The timeout the armed device uses (None when not armed)."""
        return self._timeout if self._armed else None

    def arm(self, timeout: int) -> ArmResult:
        """Arm with `timeout` seconds, idempotently: open, set the timeout and feed when not armed; set
        the new timeout when armed with another (the lease changed); else just feed. A failed first arm
        closes the device again; a failed re-arm leaves it armed with the timeout it had."""
        if self.mode == "off":
            return ArmResult(True)
        result = self._arm(timeout)
        self.last_error = None if result.ok else result.message
        return result

    def _arm(self, timeout: int) -> ArmResult:
        if timeout < 1:
            return ArmResult(False, f"a watchdog timeout must be at least 1 second, not {timeout}")
        try:
            driver = self._device()
            if not self._armed:
                return self._open_and_arm(driver, timeout)
            if timeout != self._requested:
                return self._rearm(driver, timeout)
            driver.keepalive()
        except WatchdogError as exc:
            return ArmResult(False, str(exc), self.timeout)
        return ArmResult(True, timeout=self._timeout)

    def _open_and_arm(self, driver: Driver, timeout: int) -> ArmResult:
        driver.open()
        try:
            actual = driver.set_timeout(timeout)
            driver.keepalive()
        except WatchdogError:
            driver.close()
            raise
        problem = self._too_long(actual, timeout)
        if problem and self.mode == "required":
            driver.close()
            return ArmResult(False, problem, actual)
        self._armed, self._requested, self._timeout = True, timeout, actual
        return ArmResult(True, problem, actual)

    def _rearm(self, driver: Driver, timeout: int) -> ArmResult:
        actual = driver.set_timeout(timeout)
        self._timeout = actual
        driver.keepalive()
        problem = self._too_long(actual, timeout)
        if problem and self.mode == "required":
            # Still armed: it guards a frozen agent, if late. The caller must not lead on it; the next arm
            # with this timeout tries to set it again (_requested is unchanged).
            return ArmResult(False, problem, actual)
        self._requested = timeout
        return ArmResult(True, problem, actual)

    def _too_long(self, actual: int, asked: int) -> str:
        if actual <= asked:
            return ""  # a shorter timeout resets a frozen host earlier: still safe
        return (f"watchdog device {self.device} uses a timeout of {actual} s, longer than the {asked} s asked "
                "for: it would reset a frozen host only after its leader lease expired")

    def keepalive(self) -> bool:
        """Feed the armed device: False if that failed (`last_error` says why). True when not armed."""
        if not self._armed:
            return True
        try:
            self._device().keepalive()
        except WatchdogError as exc:
            self.last_error = str(exc)
            return False
        return True

    def disarm(self) -> None:
        """Magic close of an armed device (a failure leaves it armed in the kernel). Never raises."""
        if not self._armed or self._driver is None:
            return
        self._armed, self._requested, self._timeout = False, None, None
        self._driver.close()

    def probe(self) -> str | None:
        """For the REST field `watchdog_failed`: None if this member could arm its watchdog when it has to,
        else why not. Only mode `required` needs one; the path is checked without opening it (which
        would arm it): its file type and write permission."""
        if self.mode != "required" or self._armed:
            return None
        if self._driver_error is not None:
            return self._driver_error
        return _device_problem(self.driver_name, self.device)

    def _device(self) -> Driver:
        if self._driver is None:
            raise WatchdogError(self._driver_error or "no watchdog driver")
        return self._driver
