"""One CPU-thread budget for the whole process, and a governor that shares the CPUs with other work.

A training process holds several thread pools: torch's OpenMP team (its bundled libgomp, which also
serves oneDNN, MKL, Numba's 'omp' layer and our C++ extensions when they load after torch), and
OpenBLAS's own pthreads (numpy). Each sizes itself to every CPU, and the OpenMP ones spin-wait at the end
of every parallel region. Alone that is the fast setting; beside any other busy process a spinning
thread burns the time slice its partner needs to finish the region, and a step with hundreds of small
regions (the LSTMs) gets 3–30× slower — the classic oversubscription collapse of busy-waiting barriers
(Anderson, "Spin lock alternatives for shared-memory multiprocessors", 1990; the OpenMP spec's
OMP_WAIT_POLICY exists for this reason).

What this module does:
- `cpu_budget()`: the CPUs this process may really use — its affinity mask and its cgroup CPU quota
  (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), not `os.cpu_count()`.
- `set_threads(n)`: one thread count for every pool (torch, Numba, and every BLAS / OpenMP library that
  threadpoolctl finds loaded: OpenBLAS and each libgomp, which covers the C++ extensions).
- `Governor`: keeps the fast spinning pools while the machine is free and drops the process to its fair
  share of the CPUs while other work is runnable (a one-thread team never spin-waits), going back up only
  after the machine has been free for a while. It samples "other runnable threads" (the kernel's count of
  runnable tasks, /proc/loadavg, minus this process's threads in state R) at safe points between units
  of work (`poll()`: each training step, each CSLS tile), at most every `interval_s`.
- `ENV_DEFAULTS`: settings the runtimes read once when they load; `xlfast/__init__.py` sets them with
  `os.environ.setdefault`, so a user's own setting always wins (none at present: see there why).

`configure(threads)` is what every computing command calls once at start-up; `XLFAST_GOVERNOR=0`
switches the governor off (fixed thread count, as before it existed).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Optional

log = logging.getLogger("xlfast")

# Read by the runtimes when they load, so they are set in xlfast/__init__.py before torch, numpy or numba
# are imported (setdefault: the user's environment wins). Empty, by measurement:
# - OMP_WAIT_POLICY=PASSIVE / a small GOMP_SPINCOUNT end the collapse but cost 25–50% alone (a futex
#   wake-up for every small parallel region of the LSTMs); the governor gets the same under load for free.
# - NUMBA_THREADING_LAYER=workqueue (Numba's own sleeping pool instead of OpenMP) measured no faster
#   alone (grk-it steps 194 vs 189 ms) and aborts the process when two Python threads call parallel
#   kernels at once. Numba's 'omp' layer already shares torch's OpenMP runtime: torch loads its libgomp
#   with global symbols, so once torch is imported the system libgomp that Numba's layer (and our
#   -fopenmp extensions) pull in is mapped but unused, and a Numba kernel runs on torch's warm team
#   (checked: no extra threads, and a passive policy given to the system libgomp changes nothing).
# - ONEDNN_PRIMITIVE_CACHE_CAPACITY (memory, not threads): oneDNN, which runs torch's CPU LSTMs, caches
#   one primitive per batch shape, about 7 MB each at d = 500, up to 1,024, so a run's memory grows with the
#   shapes it meets (ne-en at batch 64: 4.6 GB after one epoch, 8 GB after ten). A bound of 128 cuts that
#   (0.63x after one ne-en epoch) but rebuilds primitives every epoch: the grk-it default command took
#   145 s against 99-105 s (seed 2, alternated). Left to the user (README, benchmarks/train_memory.py).
ENV_DEFAULTS: dict[str, str] = {}


def apply_env_defaults(env=None) -> dict:
    """Set ENV_DEFAULTS where the environment does not already say otherwise; returns what it set."""
    env = os.environ if env is None else env
    done = {}
    for key, value in ENV_DEFAULTS.items():
        if key not in env:
            env[key] = value
            done[key] = value
    return done


# ----------------------------------------------------------------------------------------- budget
def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (`taskset`, cpusets); os.cpu_count() where there is none."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _ancestors(root: str, rel: str) -> list[str]:
    """`root/rel` and each parent directory up to `root` itself (a limit anywhere above applies too).
    Inside a cgroup namespace /proc/self/cgroup may name a path the mount does not hold: then only the
    mount's own top directory is this cgroup."""
    rel = rel.strip("/")
    dirs = []
    if rel and os.path.isdir(os.path.join(root, rel)):
        parts = rel.split("/")
        for k in range(len(parts), 0, -1):
            dirs.append(os.path.join(root, *parts[:k]))
    dirs.append(root)
    return dirs


def cgroup_cpu_limit(proc_self_cgroup: str = "/proc/self/cgroup", cgroup_root: str = "/sys/fs/cgroup") -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is no quota.

    cgroup v2: `cpu.max` = "max 100000" or "<quota> <period>" (microseconds). cgroup v1: the `cpu`
    controller's `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`. The smallest limit on the path
    from this cgroup up to the root wins; with both hierarchies mounted (hybrid), the smaller one.
    """
    text = _read(proc_self_cgroup)
    if not text:
        return None
    limits = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        ctrl = controllers.split(",") if controllers else []
        if hid == "0" and not controllers:  # v2 (unified); in hybrid mode it lives under 'unified'
            for root in (cgroup_root, os.path.join(cgroup_root, "unified")):
                if not os.path.exists(os.path.join(root, "cgroup.controllers")):
                    continue
                for d in _ancestors(root, path):
                    val = _read(os.path.join(d, "cpu.max"))
                    if not val:
                        continue
                    fields = val.split()
                    if len(fields) >= 1 and fields[0] != "max":
                        try:
                            quota = float(fields[0])
                            period = float(fields[1]) if len(fields) > 1 else 100000.0
                        except ValueError:
                            continue
                        if quota > 0 and period > 0:
                            limits.append(quota / period)
                break
        elif "cpu" in ctrl:
            for name in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                root = os.path.join(cgroup_root, name)
                if os.path.isdir(root):
                    break
            else:
                continue
            for d in _ancestors(root, path):
                q, p = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
                try:
                    quota, period = float(q), float(p)
                except (TypeError, ValueError):
                    continue
                if quota > 0 and period > 0:
                    limits.append(quota / period)
    return min(limits) if limits else None


def cpu_budget(affinity: Optional[int] = None, quota: Optional[float] = -1.0) -> int:
    """Threads this process should use: its affinity mask, capped by the cgroup CPU quota (rounded down:
    threads beyond the quota only queue for it, and spinning ones burn it), at least 1.
    `affinity` / `quota` override what is read from the system (tests); quota None means no quota."""
    n = affinity_cpus() if affinity is None else max(1, int(affinity))
    q = cgroup_cpu_limit() if quota == -1.0 else quota
    if q is not None:
        n = min(n, max(1, math.floor(q + 1e-9)))
    return max(1, n)


def default_threads() -> int:
    """The default of `--threads`: the CPU budget, or OMP_NUM_THREADS where the user set a smaller one."""
    n = cpu_budget()
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) >= 1:
        n = min(n, int(env))
    return n


# ------------------------------------------------------------------------------------------ pools
_controller = None


def _threadpool_controller(refresh: bool = False):
    """threadpoolctl's view of the loaded BLAS / OpenMP libraries (rebuilt on refresh: a library loaded
    later — Numba's layer, a C++ extension — is only seen by a fresh scan, ≈5 ms)."""
    global _controller
    if _controller is None or refresh:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency; degrade to torch + numba only
            return None
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def one_blas_thread():
    """BLAS single-threaded for the duration: for many small products whose results must not depend on
    the thread count (a BLAS splits a product differently over 1 and 2 threads, which changes the last
    bits, and the governor may change the count between two products of one computation)."""
    ctl = _threadpool_controller()
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


def set_threads(n: int) -> None:
    """Every pool of this process to `n` threads (torch intra-op + MKL, Numba if loaded, OpenBLAS and every
    loaded OpenMP runtime). OpenMP's thread count is per calling thread: call it from the thread that
    runs the work (the main thread in xlfast)."""
    import torch

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if "numba" in sys.modules:  # never import Numba just to size its pool
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    ctl = _threadpool_controller(refresh=True)
    if ctl is not None:
        ctl.limit(limits=n)


def pools() -> dict:
    """The thread count of each pool as the runtimes report it (for logs and benchmarks)."""
    import torch

    out = {"torch": torch.get_num_threads()}
    if "numba" in sys.modules:
        import numba

        out["numba"] = numba.get_num_threads()
        try:
            out["numba_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel ran yet: the layer is chosen at the first launch
            out["numba_layer"] = f"{numba.config.THREADING_LAYER} (not launched)"
    ctl = _threadpool_controller(refresh=True)
    for lib in ctl.lib_controllers if ctl is not None else []:
        key = f"{lib.internal_api}:{os.path.basename(os.path.dirname(lib.filepath))}/{os.path.basename(lib.filepath)}"
        out[key] = lib.num_threads
    return out


# --------------------------------------------------------------------------------------- sampling
class Sample(NamedTuple):
    running: int  # runnable tasks on the whole machine (the kernel's nr_running), this process included
    own: int  # this process's threads in state R
    online: int  # CPUs the machine runs them on

    @property
    def others(self) -> int:
        return max(0, self.running - self.own)


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def own_running(task_dir: str = "/proc/self/task") -> int:
    """Threads of this process in state R (running or runnable; a spinning OpenMP worker counts)."""
    n = 0
    for tid in os.listdir(task_dir):
        try:
            s = _read_small(os.path.join(task_dir, tid, "stat"))
        except OSError:  # the thread exited meanwhile
            continue
        close = s.rfind(b")")  # the command name may hold spaces and parentheses
        if close >= 0 and s[close + 2 : close + 3] == b"R":
            n += 1
    return n


def machine_running(loadavg: str = "/proc/loadavg") -> int:
    """Runnable tasks on the machine now: the numerator of /proc/loadavg's 4th field (= procs_running)."""
    return int(_read_small(loadavg).split()[3].split(b"/")[0])


def online_cpus() -> int:
    return max(1, os.cpu_count() or 1)


def sample() -> Optional[Sample]:
    """One contention sample (≈50 µs), or None where /proc is not there."""
    try:
        # The machine-wide count is read between two counts of our own threads: when they differ (a
        # worker stopped spinning meanwhile) the moment is ambiguous; try again, then take the smaller
        # (erring towards seeing contention, the cheaper mistake).
        for _ in range(3):
            before = own_running()
            running = machine_running()
            after = own_running()
            if before == after:
                break
    except (OSError, ValueError, IndexError):
        return None
    return Sample(running, min(before, after, running), online_cpus())


# --------------------------------------------------------------------------------------- governor
@dataclass
class Governor:
    """Decides the thread count from contention samples; `apply` is called on every change.

    Target = the CPUs other work leaves free (online − others), between 1 and `ceiling`. Going down needs
    `down_after` consecutive samples that agree: two, so that a kernel thread or a short-lived command
    caught in one sample does not cost an idle machine a second of single-threaded steps, while a busy
    neighbour costs at most one extra step (3–10× slower) before the drop. Going up waits for `up_after`
    consecutive free samples spanning at least `up_hold_s` (a wrong step up costs a collapsed step; a
    late one only a slower step).
    """

    ceiling: int
    apply: Callable[[int], None] = set_threads
    down_after: int = 2
    up_after: int = 3
    up_hold_s: float = 0.3
    interval_s: float = 0.02
    sampler: Callable[[], Optional[Sample]] = sample
    clock: Callable[[], float] = time.monotonic
    current: int = 0
    changes: int = 0
    _down: int = 0
    _up: list = field(default_factory=list)
    _last: float = -math.inf

    def __post_init__(self):
        self.ceiling = max(1, int(self.ceiling))
        if not self.current:
            self.current = self.ceiling

    def target(self, s: Sample) -> int:
        return max(1, min(self.ceiling, s.online - s.others))

    def decide(self, s: Sample, now: float) -> int:
        """Feed one sample taken at time `now`; returns the thread count to run with from here on."""
        t = self.target(s)
        if t < self.current:
            self._up.clear()
            self._down += 1
            if self._down >= self.down_after:
                self._down = 0
                return t
            return self.current
        self._down = 0
        if t > self.current:
            self._up.append((now, t))
            if len(self._up) >= self.up_after and now - self._up[0][0] >= self.up_hold_s:
                new = min(x for _, x in self._up)
                self._up.clear()
                return new
            return self.current
        self._up.clear()
        return self.current

    def poll(self) -> int:
        """Sample (at most every interval_s) and apply a changed decision; returns the thread count."""
        now = self.clock()
        if now - self._last < self.interval_s:
            return self.current
        self._last = now
        s = self.sampler()
        if s is None:
            return self.current
        new = self.decide(s, now)
        if new != self.current:
            self.apply(new)
            self.current = new
            self.changes += 1
            log.debug("threads: %d (other runnable threads: %d on %d CPUs)", new, s.others, s.online)
        return self.current


# ------------------------------------------------------------------------------------ process state
_state: dict = {"governor": None, "configured": False, "threads": None}


def governor_enabled() -> bool:
    return os.environ.get("XLFAST_GOVERNOR", "1").strip().lower() not in ("0", "off", "false", "no")


def configure(threads: Optional[int] = None, adaptive: Optional[bool] = None) -> dict:
    """Apply one thread budget to every pool of this process (default: `default_threads()`), and start
    the governor unless `adaptive` is False or XLFAST_GOVERNOR=0. Returns what was applied."""
    if threads is not None and int(threads) < 1:
        from xlfast.errors import XlfastError

        raise XlfastError(f"threads must be at least 1, got {threads}")
    n = default_threads() if threads is None else int(threads)
    set_threads(n)
    on = governor_enabled() if adaptive is None else adaptive
    _state.update(configured=True, threads=n, governor=Governor(ceiling=n) if on and n > 1 else None)
    report = {"threads": n, "budget": cpu_budget(), "governor": _state["governor"] is not None}
    report.update(pools())
    log.debug("threads: %s", ", ".join(f"{k} {v}" for k, v in report.items()))
    return report


def poll() -> int:
    """Called between units of work (training steps, CSLS tiles). The first call in a process that never
    called configure() adopts torch's current thread count as its ceiling (a library user's
    torch.set_num_threads is respected). Returns the thread count in force."""
    if not _state["configured"]:
        import torch

        n = torch.get_num_threads()
        _state.update(configured=True, threads=n,
                      governor=Governor(ceiling=n) if governor_enabled() and n > 1 else None)
    g = _state["governor"]
    return g.poll() if g is not None else _state["threads"]


def active() -> dict:
    """What is in force now (for benchmarks' reports)."""
    g = _state["governor"]
    return {"threads": _state["threads"], "governor": g is not None,
            "current": g.current if g is not None else _state["threads"],
            "changes": g.changes if g is not None else 0}


def reset() -> None:
    """Forget the configuration (tests)."""
    _state.update(governor=None, configured=False, threads=None)
