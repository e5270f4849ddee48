"""psutil behind one small interface: interfaces, machine size, process trees."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Interface:
    """One IPv4 address of one network interface."""

    name: str
    address: str
    netmask: str
    broadcast: str | None
    is_up: bool


def ipv4_interfaces() -> list[Interface]:
    """Every IPv4 address on this machine (in this network namespace)."""
    stats = psutil.net_if_stats()
    out: list[Interface] = []
    for name, addrs in psutil.net_if_addrs().items():
        up = bool(stats.get(name) and stats[name].isup)
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask:
                out.append(Interface(name, a.address, a.netmask, a.broadcast, up))
    return out


def cpu_count() -> int:
    return psutil.cpu_count(logical=True) or 1


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def process_started(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), None if it is gone or a zombie."""
    try:
        p = psutil.Process(pid)
        return None if p.status() == psutil.STATUS_ZOMBIE else float(p.create_time())
    except psutil.Error:
        return None


def rss_bytes(pids: set[int] | list[int]) -> int:
    """The resident memory of ``pids`` together (those gone count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += int(psutil.Process(pid).memory_info().rss)
    return total


def pss_bytes(pids: set[int] | list[int]) -> int:
    """The proportional memory of ``pids`` together: shared pages (Ray's object store, its
    libraries) counted once across them, not once per process as RSS would."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            try:
                total += int(p.memory_full_info().pss)
            except (AttributeError, psutil.AccessDenied):
                total += int(p.memory_info().rss)
    return total


def process_argv(pid: int) -> list[str]:
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def pids_with_argv(parts: list[str]) -> list[int]:
    """PIDs of this user's processes whose command line holds every one of ``parts``."""
    found = []
    for p in psutil.process_iter(["cmdline", "uids"]):
        with contextlib.suppress(psutil.Error, TypeError):
            argv = p.info["cmdline"] or []
            if p.info["uids"].real == os.getuid() and all(x in argv for x in parts):
                found.append(p.pid)
    return found


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (empty if it is gone)."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def terminate_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace_s``, then SIGKILL it and every process it left.

    ``ray start --block`` stops its own processes on SIGTERM but leaves the dashboard's
    forkserver children behind, so the tree is captured first and swept afterwards.
    """
    tree = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    tree += descendants(pid)
    for p in [pid, *tree]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    procs = []
    for p in tree:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(p))
    psutil.wait_procs(procs, timeout=5)


# --- Readings for resources and owner-first lending (appended; Linux /proc first) ---------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSeconds:
    """Machine-wide CPU seconds since boot, summed over all CPUs."""

    busy: float  # everything but idle and iowait (what ``top`` calls used)
    processes: float  # user + nice + system: time spent in processes, not in interrupts
    total: float


def cpu_seconds() -> CpuSeconds:
    t = psutil.cpu_times()
    total = float(sum(t))
    # On Linux "user" already includes guest time, so guest fields are not added again.
    for name in ("guest", "guest_nice"):
        total -= float(getattr(t, name, 0.0))
    idle = t.idle + float(getattr(t, "iowait", 0.0))
    processes = t.user + float(getattr(t, "nice", 0.0)) + t.system
    return CpuSeconds(busy=total - idle, processes=processes, total=total)


def memory_used_total() -> tuple[int, int]:
    """Bytes in use (total minus available, as htop counts it) and total bytes."""
    vm = psutil.virtual_memory()
    return int(vm.total - vm.available), int(vm.total)


def load_1m() -> float:
    return float(os.getloadavg()[0])


def battery() -> tuple[float | None, bool | None, str]:
    """(percent, plugged in, reason): ``(None, None, "no battery")`` on a desktop."""
    try:
        b = psutil.sensors_battery()
    except (AttributeError, OSError, RuntimeError) as exc:
        return None, None, f"cannot read the battery ({exc})"
    if b is None:
        return None, None, "no battery"
    return float(b.percent), b.power_plugged, ""


# Sensors that report the CPU package as a whole, best first.
_CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal")


def cpu_temperature() -> tuple[float | None, str]:
    """The CPU package temperature in °C, or (None, reason)."""
    try:
        temps = psutil.sensors_temperatures()
    except (AttributeError, OSError, RuntimeError) as exc:
        return None, f"cannot read sensors ({exc})"
    for chip in _CPU_SENSORS:
        readings = [t.current for t in temps.get(chip, []) if t.current is not None]
        if readings:
            return float(max(readings)), ""
    return None, "no CPU temperature sensor"


@dataclass(frozen=True)
class ProcStat:
    """The few fields of ``/proc/PID/stat`` that resource accounting needs."""

    ppid: int
    cpu_s: float  # user + system of the process and of its reaped children, in seconds
    start_s: float  # start time in seconds after boot (tells a reused PID apart)
    children_s: float = 0.0  # the reaped children's part of ``cpu_s``


def proc_stat(pid: int) -> ProcStat | None:
    """One read of ``/proc/PID/stat``; None if the process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        # fields[0] is field 3 (state): ppid is 4, utime..cstime 14..17, starttime 22.
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        return ProcStat(
            ppid=int(fields[1]),
            cpu_s=(own + reaped) / _CLOCK_TICKS,
            start_s=int(fields[19]) / _CLOCK_TICKS,
            children_s=reaped / _CLOCK_TICKS,
        )
    except (IndexError, ValueError):
        return None


def seconds_since_boot() -> float:
    """The clock that ``ProcStat.start_s`` is measured on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def parent_map() -> dict[int, int]:
    """PID -> parent PID of every process (one small read per process).

    About 15 µs a process, cheaper than psutil's ``children(recursive=True)``, which also
    builds a Process object for each.
    """
    parents: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {p.pid: p.ppid() for p in psutil.process_iter() if _ok(p)}
    for name in names:
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                parents[int(name)] = st.ppid
    return parents


def _ok(p: psutil.Process) -> bool:
    try:
        p.ppid()
    except psutil.Error:
        return False
    return True


def process_tree(root: int, parents: dict[int, int] | None = None) -> set[int]:
    """``root`` and every process below it (empty if ``root`` is gone)."""
    parents = parent_map() if parents is None else parents
    if root not in parents:
        return set()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def process_title(pid: int) -> str:
    """The process's title as ``ps`` shows it (its argv, which Ray's workers rewrite to
    ``ray::IDLE``, ``ray::RayTrainWorker.run_train_fn``...), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.split(b"\0", 1)[0].decode(errors="replace").strip()


def ray_work(root: int) -> list[str] | None:
    """The titles of the Ray workers below ``root`` that hold work: tasks and actors, live
    or between calls (``ray::...``, less the pooled idle ones, ``ray::IDLE``). None when
    no ``raylet`` runs below ``root`` (Ray runs elsewhere, in a container say, or not at
    all): then this cannot tell."""
    tree = process_tree(root)
    titles = [process_title(pid) for pid in tree if pid != root]
    if not any(t.endswith("/raylet") or t == "raylet" for t in titles):
        return None
    return sorted(t for t in titles if t.startswith("ray::") and t != "ray::IDLE")


def is_descendant(pid: int, root: int, max_depth: int = 64) -> bool:
    """True if ``pid`` is ``root`` or below it (walks up the parent chain)."""
    for _ in range(max_depth):
        if pid == root:
            return True
        if pid <= 1:
            return False
        st = proc_stat(pid)
        if st is None:
            return False
        pid = st.ppid
    return False


def process_name(pid: int) -> str:
    """The process's name, or "?" when it is gone or hidden (another PID namespace)."""
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


@dataclass(frozen=True)
class Login:
    """One logged-in session (utmp) and when its terminal last had input."""

    user: str
    terminal: str  # "pts/3", "tty1", ":0" (a display, no device), "" if none
    host: str
    input_at: float | None  # wall-clock time of the terminal's last input (its atime)


def logins() -> list[Login]:
    """Logged-in sessions. A terminal's atime moves when someone types into it (the
    kernel updates it on read, in 8-second steps), which is how ``w`` computes IDLE."""
    out = []
    try:
        users = psutil.users()
    except (OSError, RuntimeError):
        return []
    for u in users:
        term = u.terminal or ""
        at = None
        if term and not term.startswith(":"):
            with contextlib.suppress(OSError):
                at = os.stat(f"/dev/{term}").st_atime
        out.append(Login(u.name, term, u.host or "", at))
    return out


#: Where :func:`input_irq_count` reads the interrupt counts instead of /proc/interrupts:
#: the lab's seam for an owner's keystroke (its machines have no keyboard to press).
INTERRUPTS_ENV = "LANRAY_TEST_INTERRUPTS"


def input_irq_count(path: str = "") -> int | None:
    """Interrupts from built-in keyboards and touchpads so far (the i8042 PS/2 controller
    and HID-over-I2C devices), readable by every user; None if there are none.

    USB keyboards and mice do not show here (their interrupts are the USB controller's).
    """
    path = path or os.environ.get(INTERRUPTS_ENV) or "/proc/interrupts"
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    if not lines:
        return None
    ncpu = len(lines[0].split())
    total, seen = 0, False
    for line in lines[1:]:
        parts = line.split()
        if not parts or not parts[0].rstrip(":").isdigit():
            continue
        desc = " ".join(parts[1 + ncpu :]).lower()
        if "i8042" in desc or "i2c_hid" in desc or "i2c-hid" in desc:
            counts = [int(x) for x in parts[1 : 1 + ncpu] if x.isdigit()]
            total += sum(counts)
            seen = True
    return total if seen else None


class InputDevices:
    """Keyboards and pointers under ``/dev/input``, opened non-blocking where this user may
    (root, or the ``input`` group). ``activity()`` drains what they queued and says only
    whether there was any: the events themselves are discarded unread.

    The access time of ``/dev/input/event*`` does not move on input (evdev reads do not
    touch it), so reading is the only way to see keyboards and mice outside a terminal.
    """

    def __init__(self, devices: str = "/proc/bus/input/devices", dev_dir: str = "/dev/input"):
        self.fds: dict[int, str] = {}  # fd -> "keyboard" | "mouse"
        for event, kind in _input_devices(devices):
            with contextlib.suppress(OSError):
                fd = os.open(f"{dev_dir}/{event}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self.fds[fd] = kind

    def activity(self) -> str | None:
        """Which kind ("keyboard" or "mouse") was used since the last call, or None."""
        used = None
        for fd, kind in list(self.fds.items()):
            try:
                while os.read(fd, 4096):
                    used = used or kind
            except BlockingIOError:
                continue
            except OSError:  # unplugged
                os.close(fd)
                del self.fds[fd]
        return used

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _input_devices(path: str) -> list[tuple[str, str]]:
    """(eventN, "keyboard" | "mouse") from ``/proc/bus/input/devices``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            blocks = f.read().split("\n\n")
    except OSError:
        return []
    out = []
    for block in blocks:
        name, handlers = "", []
        for line in block.splitlines():
            if line.startswith("N: Name="):
                name = line[8:].strip('"').lower()
            elif line.startswith("H: Handlers="):
                handlers = line[12:].split()
        event = next((h for h in handlers if h.startswith("event")), None)
        if event is None or any(w in name for w in ("button", "switch", "video bus")):
            continue
        if any(h.startswith("mouse") for h in handlers):
            out.append((event, "mouse"))
        elif "kbd" in handlers:
            out.append((event, "keyboard"))
    return out
