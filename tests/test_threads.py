"""The thread budget (xlfast.threads): cgroup / affinity parsing on fake files, applying a budget to every
pool, the governor's decisions on fed samples, `--threads` validation, and the load benchmark's plumbing.
No timing asserts: speed targets live in `xlfast bench load`."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from xlfast import threads as T


# ------------------------------------------------------------------------------ cgroups, budget
def _tree(tmp_path, files: dict):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path / "proc_cgroup"), str(tmp_path / "cg")


def test_cgroup_v2_quota_in_cpus(tmp_path):
    proc, root = _tree(tmp_path, {
        "proc_cgroup": "0::/user.slice/job\n",
        "cg/cgroup.controllers": "cpu io memory\n",
        "cg/user.slice/cpu.max": "max 100000\n",
        "cg/user.slice/job/cpu.max": "150000 100000\n",
    })
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(1.5)


def test_cgroup_v2_a_tighter_parent_wins_and_max_means_none(tmp_path):
    proc, root = _tree(tmp_path, {
        "proc_cgroup": "0::/a/b\n",
        "cg/cgroup.controllers": "cpu\n",
        "cg/a/cpu.max": "50000 100000\n",
        "cg/a/b/cpu.max": "300000 100000\n",
    })
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(0.5)
    (tmp_path / "cg/a/cpu.max").write_text("max 100000\n")
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(3.0)
    (tmp_path / "cg/a/b/cpu.max").write_text("max 100000\n")
    assert T.cgroup_cpu_limit(proc, root) is None


def test_cgroup_v2_inside_a_namespace_reads_the_mount_top(tmp_path):
    # /proc/self/cgroup names a path the container's mount does not hold: the mount's top is our cgroup
    proc, root = _tree(tmp_path, {
        "proc_cgroup": "0::/kubepods/pod1/abc\n",
        "cg/cgroup.controllers": "cpu\n",
        "cg/cpu.max": "200000 100000\n",
    })
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(2.0)


def test_cgroup_v1_cfs_quota(tmp_path):
    proc, root = _tree(tmp_path, {
        "proc_cgroup": "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n",
        "cg/cpu,cpuacct/docker/x/cpu.cfs_quota_us": "250000\n",
        "cg/cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n",
    })
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(2.5)
    (tmp_path / "cg/cpu,cpuacct/docker/x/cpu.cfs_quota_us").write_text("-1\n")
    assert T.cgroup_cpu_limit(proc, root) is None


def test_cgroup_hybrid_takes_the_smaller_limit(tmp_path):
    proc, root = _tree(tmp_path, {
        "proc_cgroup": "4:cpu,cpuacct:/\n0::/svc\n",
        "cg/cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
        "cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cg/unified/cgroup.controllers": "\n",
        "cg/unified/svc/cpu.max": "100000 100000\n",
    })
    assert T.cgroup_cpu_limit(proc, root) == pytest.approx(1.0)


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert T.cgroup_cpu_limit(str(tmp_path / "missing"), str(tmp_path)) is None
    proc, root = _tree(tmp_path, {"proc_cgroup": "garbage\n1:name=systemd:/\n"})
    assert T.cgroup_cpu_limit(proc, root) is None


def test_budget_is_affinity_capped_by_the_quota_rounded_down():
    assert T.cpu_budget(affinity=8, quota=None) == 8
    assert T.cpu_budget(affinity=8, quota=2.5) == 2
    assert T.cpu_budget(affinity=8, quota=0.3) == 1
    assert T.cpu_budget(affinity=2, quota=16.0) == 2
    assert 1 <= T.cpu_budget() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert T.affinity_cpus() == len(os.sched_getaffinity(0))


def test_default_threads_respects_a_smaller_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert T.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "9999")
    assert T.default_threads() == T.cpu_budget()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert T.default_threads() == T.cpu_budget()


def test_env_defaults_never_override_the_user(monkeypatch):
    monkeypatch.setattr(T, "ENV_DEFAULTS", {"XLFAST_TEST_A": "1", "XLFAST_TEST_B": "2"})
    env = {"XLFAST_TEST_A": "mine"}
    assert T.apply_env_defaults(env) == {"XLFAST_TEST_B": "2"}
    assert env == {"XLFAST_TEST_A": "mine", "XLFAST_TEST_B": "2"}


# ------------------------------------------------------------------------------------- pools
@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    T.set_threads(before)
    T.reset()


def test_set_threads_reaches_torch_numba_blas_openmp_and_the_extensions(restore_threads):
    import numba
    from threadpoolctl import threadpool_info

    from xlfast.kernels import subword_embed

    subword_embed.registry.available("cpu")  # load every CPU backend (Numba kernels, C++ extensions)
    numba.njit(parallel=True)(lambda a: a.sum())(torch.ones(4).numpy())  # launch Numba's pool
    T.set_threads(1)
    assert torch.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert all(lib["num_threads"] == 1 for lib in threadpool_info()), threadpool_info()
    try:
        from xlfast import _csls_cpu
    except ImportError:
        _csls_cpu = None
    if _csls_cpu is not None:  # the C++ extensions' OpenMP (omp_get_max_threads seen from inside one)
        assert _csls_cpu.num_threads() == 1
    top = min(2, numba.config.NUMBA_NUM_THREADS)
    T.set_threads(top)
    assert torch.get_num_threads() == top and numba.get_num_threads() == top
    if _csls_cpu is not None:
        assert _csls_cpu.num_threads() == top
    pools = T.pools()
    assert pools["torch"] == top and pools["numba"] == top


def test_one_blas_thread_holds_blas_at_one_thread_and_restores_it(restore_threads):
    from threadpoolctl import threadpool_info

    T.set_threads(2)
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    with T.one_blas_thread():
        assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
        assert torch.get_num_threads() == 2  # only BLAS: torch's pool keeps its threads
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == \
        [lib["num_threads"] for lib in blas]


def test_configure_applies_the_budget_and_the_governor_switch(restore_threads, monkeypatch):
    monkeypatch.setenv("XLFAST_GOVERNOR", "1")
    rep = T.configure(1)
    assert rep["threads"] == 1 and torch.get_num_threads() == 1
    assert not rep["governor"]  # nothing to govern with one thread
    rep = T.configure(2)
    assert rep["governor"] and torch.get_num_threads() == 2
    monkeypatch.setenv("XLFAST_GOVERNOR", "0")
    assert not T.configure(2)["governor"]
    assert T.poll() == 2
    from xlfast.errors import XlfastError

    with pytest.raises(XlfastError, match="at least 1"):
        T.configure(0)


def test_poll_without_configure_adopts_torchs_thread_count(restore_threads, monkeypatch):
    monkeypatch.setenv("XLFAST_GOVERNOR", "0")
    T.reset()
    torch.set_num_threads(1)
    assert T.poll() == 1
    assert T.active()["threads"] == 1


# ------------------------------------------------------------------------------------ sampling
def test_own_running_reads_thread_states_even_with_odd_names(tmp_path):
    for tid, name, state in [(1, "python", "R"), (2, "a) b (c", "R"), (3, "omp worker", "S"), (4, "x", "D")]:
        (tmp_path / str(tid)).mkdir()
        (tmp_path / str(tid) / "stat").write_text(f"{tid} ({name}) {state} 1 2 3 4\n")
    assert T.own_running(str(tmp_path)) == 2


def test_machine_running_parses_loadavg(tmp_path):
    p = tmp_path / "loadavg"
    p.write_text("0.52 0.40 0.33 3/412 9876\n")
    assert T.machine_running(str(p)) == 3


def test_a_live_sample_is_consistent():
    s = T.sample()
    if s is None:
        pytest.skip("no /proc here")
    assert 1 <= s.own <= s.running and s.others == s.running - s.own and s.online >= 1


# ------------------------------------------------------------------------------------ governor
class Feed:
    """Samples and a clock for the governor, fed by the test."""

    def __init__(self):
        self.now = 0.0
        self.next = T.Sample(1, 1, 2)
        self.applied = []

    def gov(self, ceiling=2, **kw):
        return T.Governor(ceiling=ceiling, apply=self.applied.append, sampler=lambda: self.next,
                          clock=lambda: self.now, **kw)

    def step(self, g, others, dt=0.125, online=2, own=1):  # dt exact in binary
        self.now += dt
        self.next = T.Sample(own + others, own, online)
        return g.poll()


def test_governor_drops_to_the_fair_share_and_recovers_with_hysteresis():
    f = Feed()
    g = f.gov(ceiling=2, up_after=3, up_hold_s=0.3)
    assert f.step(g, 0) == 2 and f.applied == []
    assert f.step(g, 1) == 2  # one sample may be a passing kernel thread
    assert f.step(g, 1) == 1 and f.applied == [1]  # a busy process stayed: one thread
    assert f.step(g, 0) == 1
    assert f.step(g, 0) == 1  # two free samples, not yet
    assert f.step(g, 1) == 1  # contention again: the count restarts
    assert [f.step(g, 0) for _ in range(3)] == [1, 1, 1]  # three samples but only 0.25 s apart
    assert f.step(g, 0) == 2 and f.applied == [1, 2]
    assert g.changes == 2


def test_governor_shares_out_many_cpus_and_never_goes_below_one():
    f = Feed()
    g = f.gov(ceiling=8, down_after=1, up_after=1, up_hold_s=0.0)
    assert f.step(g, 5, online=8) == 3  # 5 other runnable threads leave 3 CPUs
    assert f.step(g, 20, online=8) == 1
    assert f.step(g, 6, online=8) == 2
    assert f.step(g, 0, online=8) == 8
    assert f.step(g, 0, online=16) == 8  # never above the ceiling
    assert f.applied == [3, 1, 2, 8]


def test_governor_down_after_needs_consecutive_agreement():
    f = Feed()
    g = f.gov(ceiling=2, down_after=2)
    assert f.step(g, 1) == 2
    assert f.step(g, 0) == 2
    assert f.step(g, 1) == 2
    assert f.step(g, 1) == 1


def test_governor_samples_at_most_every_interval():
    f = Feed()
    calls = []
    g = T.Governor(ceiling=2, apply=f.applied.append, interval_s=0.05, down_after=1, clock=lambda: f.now,
                   sampler=lambda: calls.append(f.now) or T.Sample(3, 1, 2))
    for _ in range(10):
        f.now += 0.01
        g.poll()
    assert len(calls) == 2 and f.applied == [1]


def test_governor_ignores_missing_samples():
    g = T.Governor(ceiling=2, apply=lambda n: pytest.fail("applied"), sampler=lambda: None)
    assert g.poll() == 2


# ------------------------------------------------------------------------------ CLI and bench
def test_threads_below_one_is_a_clear_usage_error(tmp_path):
    from typer.testing import CliRunner

    from xlfast.cli.main import app

    for argv in (["train", "x.tsv", "-o", str(tmp_path / "r"), "--threads", "0"],
                 ["nn", str(tmp_path), "w", "--threads", "-2"]):
        res = CliRunner().invoke(app, argv)
        assert res.exit_code == 2
        assert "--threads" in res.output and "at least 1" in res.output


def test_every_computing_command_takes_threads():
    from typer.testing import CliRunner

    from xlfast.cli.main import app

    for argv in (["train"], ["align"], ["eval", "bli"], ["mine"], ["map"], ["nn"], ["show"], ["demo"],
                 ["bench", "csls"], ["bench", "embed"], ["bench", "train"], ["bench", "load"]):
        res = CliRunner().invoke(app, argv + ["--help"], terminal_width=200)
        assert res.exit_code == 0 and "--threads" in res.output, argv


def test_bench_load_config_parsing():
    from xlfast.bench.load import parse_config

    assert parse_config("before")[1]["XLFAST_GOVERNOR"] == "0"
    assert parse_config("x:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=1000") == (
        "x", {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"})
    from xlfast.errors import XlfastError

    with pytest.raises(XlfastError, match="unknown configuration 'nonsense'"):
        parse_config("nonsense")


def test_bench_load_runs_small_and_leaves_no_child_behind():
    """A tiny CSLS worker pair through two scenarios; every child it started is gone afterwards."""
    from xlfast.bench import load

    started = []
    real_popen = load.subprocess.Popen

    def spy(*a, **kw):
        p = real_popen(*a, **kw)
        started.append(p)
        return p

    load.subprocess.Popen = spy
    try:
        res = load.run_bench(["csls"], [("fixed", {"XLFAST_GOVERNOR": "0"})], ["alone", "busy"], rounds=1, warm=0.1,
                             seconds={"csls": 0.2}, dim=None, n=300, csls_dim=8, threads=None)
    finally:
        load.subprocess.Popen = real_popen
    rows = {r["scenario"]: r for r in res["rows"]}
    assert set(rows) == {"alone", "busy"}
    assert rows["alone"]["vs_alone"] == pytest.approx(1.0)
    assert rows["busy"]["ms_per_unit"] > 0
    assert len(started) == 2  # one worker (no scenario needs a second), one busy loop
    assert all(p.poll() is not None for p in started)
    assert sys.executable in started[0].args
