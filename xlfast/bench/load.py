"""`xlfast bench load`: speed beside other work — a grk-it training step and a 20k×20k×300 CSLS top-k
alone, beside one plain busy process, beside a second xlfast process doing the same work, and with all
three (busy + two xlfast) on the machine.

Every measured process is a worker child (`python -m xlfast.bench.load --worker KIND`) started once per
thread configuration with that configuration's environment (the runtimes read theirs when they load), so
"before" (the runtimes' own defaults, fixed threads) and "after" (xlfast's defaults, the governor) run in
one benchmark: scenarios × configurations are alternated A B A B, and every ratio is to the alone time
of the same configuration in the same run (the machine's speed drifts). Competing busy
loops are children too; every child is bounded in time and killed in a finally.

Protocol of a worker (stdin → stdout, one JSON line per answer): "run T0 T1" (absolute time.monotonic()
instants, shared by all processes of a scenario): run units of work (warm-up) until T0, time whole units
until one ends after T1, report; then keep working untimed — the others may still be timing — until
"stop". "quit" ends it. `run_bench` returns the results; the CLI (`xlfast.cli.bench_cmd`) renders them.
"""
from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from xlfast.errors import XlfastError

SCENARIOS = ("alone", "busy", "two", "three")
SCENARIO_HELP = {  # what runs beside the measured process
    "alone": "alone",
    "busy": "+busy",
    "two": "+xlfast",
    "three": "+busy +xlfast",
}
# Thread configurations. Values are environment variables for the worker; None removes a variable.
# "before" pins every runtime to its own default and a fixed thread count (what xlfast did before it
# managed threads); "after" is xlfast's defaults with the governor; "passive" the usual remedy.
_UNSET = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "OMP_NUM_THREADS": None, "NUMBA_NUM_THREADS": None,
          "NUMBA_THREADING_LAYER": None}
CONFIGS = {
    "before": {**_UNSET, "XLFAST_GOVERNOR": "0"},
    "after": {**_UNSET, "XLFAST_GOVERNOR": "1"},
    "passive": {**_UNSET, "XLFAST_GOVERNOR": "0", "OMP_WAIT_POLICY": "PASSIVE"},
}
KINDS = ("train", "csls", "demo")
LIFETIME_S = 1800  # no child outlives this, whatever happens to the parent


# ------------------------------------------------------------------------------------ the workers
class _TrainWork:
    """One training step per unit (SWave, pre-tokenised): on grk-it at the default sizes (as `bench train`),
    or ('demo') on the built-in 600-pair synthetic pair at dim 32 — tiny steps, the worst case for
    spinning pools."""

    def __init__(self, dim: Optional[int], corpus: str = "grk-it"):
        from xlfast.bench.train import corpora
        from xlfast.corpora import CorpusSpec
        from xlfast.tokenize import TokenizerSpec
        from xlfast.train import TrainConfig, Trainer

        out = tempfile.mkdtemp(prefix="xlfast-load-")
        if corpus == "demo":
            from xlfast.synthetic import make_pair

            files = make_pair(600, 120, 0).write(Path(out) / "data")
            spec, dim = CorpusSpec(str(files["corpus"]), None, ("src", "tgt")), dim or 32
        else:
            spec = corpora(["grk-it"]).get("grk-it")
            if spec is None:
                raise FileNotFoundError("grk-it data not found")
        cfg = TrainConfig(corpora=[spec], out=str(Path(out) / "run"), subword="ave", tokenizer=TokenizerSpec("none"),
                          dim=dim, spm_vocab=300 if corpus == "demo" else 1000)
        self.trainer = Trainer.new(cfg, log=lambda m: None)
        self.plan = self.trainer.plan(1)
        self.k = 0
        self.trainer.model.train()

    def unit(self) -> None:
        k, idx = self.plan[self.k % len(self.plan)]
        self.k += 1
        self.trainer.train_step(self.trainer.prep.datasets[k], idx)

    def info(self) -> dict:
        return {"steps_per_epoch": len(self.plan)}


class _CslsWork:
    """One exact CSLS top-10 of 20k×20k×300 random unit vectors per unit (`xlfast.kernels.csls.topk`)."""

    def __init__(self, n: int, dim: int):
        import numpy as np

        from xlfast.kernels import csls as C

        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, dim), dtype=np.float32)
        Y = rng.standard_normal((n, dim), dtype=np.float32)
        self.X = X / np.linalg.norm(X, axis=1, keepdims=True)
        self.Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        self.topk = C.topk

    def unit(self) -> None:
        self.topk(self.X, self.Y, 10, metric="csls", normalized=True)

    def info(self) -> dict:
        return {"n": self.X.shape[0], "dim": self.X.shape[1]}


def _stdin_line(timeout: float) -> Optional[str]:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    line = sys.stdin.readline()
    return line if line else "quit"  # EOF: the parent is gone


def worker(kind: str, dim: Optional[int], n: int, csls_dim: int, threads: Optional[int]) -> None:
    """Child side of the protocol (see the module docstring)."""
    import threading

    from xlfast import threads as T

    # a watchdog: never outlive the benchmark, whatever happens to the parent (daemon: a normal exit
    # does not wait for it)
    watchdog = threading.Timer(LIFETIME_S, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    applied = T.configure(threads)
    work = _CslsWork(n, csls_dim) if kind == "csls" else _TrainWork(dim, "demo" if kind == "demo" else "grk-it")
    work.unit()  # compile, allocate
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "applied": applied, **work.info()}) + "\n")
    out.flush()
    while True:
        line = _stdin_line(None)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            return
        if cmd[0] != "run":
            continue
        t0, t1 = float(cmd[1]), float(cmd[2])
        while time.monotonic() < t0:
            work.unit()
        start = time.monotonic()
        units, times, used = 0, [], {}
        while True:
            u = time.monotonic()
            work.unit()
            times.append(time.monotonic() - u)
            units += 1
            now = T.active()["current"]
            used[now] = used.get(now, 0) + 1
            if time.monotonic() >= t1:
                break
        elapsed = time.monotonic() - start
        out.write(json.dumps({"units": units, "seconds": elapsed, "per_unit": elapsed / units,
                              "median_unit": statistics.median(times), "active": T.active(),
                              "threads_used": used}) + "\n")
        out.flush()
        while _stdin_line(0) is None:  # keep the others company until told to stop
            work.unit()
        out.write(json.dumps({"stopped": True}) + "\n")
        out.flush()


# ------------------------------------------------------------------------------------ the parent
class _Child:
    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"benchmark worker {self.proc.pid} gave no answer (exit code {self.proc.poll()})")
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()


def busy_loop(seconds: float) -> subprocess.Popen:
    """A plain busy process (one thread, never sleeps), ending by itself after `seconds` at the latest."""
    code = f"import time\nend = time.monotonic() + {float(seconds)}\nwhile time.monotonic() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def _config_env(spec: dict) -> dict:
    env = dict(os.environ)
    for key, value in spec.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def parse_config(text: str) -> tuple[str, dict]:
    """'before', 'after', 'passive', or NAME:KEY=VALUE,KEY=VALUE (a custom environment)."""
    if ":" not in text:
        if text not in CONFIGS:
            raise XlfastError(f"unknown configuration {text!r} ({', '.join(CONFIGS)}, or NAME:KEY=VALUE,...)")
        return text, dict(CONFIGS[text])
    name, _, rest = text.partition(":")
    env = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise XlfastError(f"--config {text!r}: expected KEY=VALUE, got {item!r}")
        env[key.strip()] = value.strip()
    return name, env


def background_load(seconds: float = 0.5, samples: int = 10) -> float:
    """Mean runnable tasks of the machine besides this process, sampled over `seconds` before a scenario
    (which doubles as a cool-down: the previous scenario's pools stop spinning, its busy loop is gone)."""
    from xlfast.threads import machine_running

    vals = []
    for _ in range(samples):
        time.sleep(seconds / samples)
        vals.append(max(0, machine_running() - 1))
    return statistics.mean(vals)


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait up to `max_wait` seconds for the machine's background load to fall below `threshold`;
    returns the last background measured."""
    end = time.monotonic() + max_wait
    bg = background_load()
    while bg >= threshold and time.monotonic() < end:
        bg = background_load(1.0)
    return bg


def run_scenario(scenario: str, pair: list[_Child], warm: float, seconds: float, limit: float,
                 quiet: float = 0.0) -> dict:
    busy = []
    measured = pair[:1] if scenario in ("alone", "busy") else pair
    bg = wait_quiet(quiet) if quiet > 0 else background_load()
    try:
        if scenario in ("busy", "three"):
            busy.append(busy_loop(warm + seconds + limit))
        t0 = time.monotonic() + warm
        t1 = t0 + seconds
        for w in measured:
            w.send(f"run {t0} {t1}")
        results = [w.read(timeout=warm + seconds + limit) for w in measured]
        for w in measured:
            w.send("stop")
        for w in measured:
            w.read(timeout=limit)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    bg = max(bg, background_load())  # work that arrived meanwhile is likely still there
    per = [r["per_unit"] for r in results]
    return {"per_unit": statistics.mean(per), "each": per, "background": bg,
            "threads_end": [r["active"]["current"] for r in results],
            "threads_used": [r["threads_used"] for r in results],
            "changes": [r["active"]["changes"] for r in results]}


def run_bench(kinds: list[str], configs: list[tuple[str, dict]], scenarios: list[str], rounds: int,
              warm: float, seconds: dict, dim: Optional[int], n: int, csls_dim: int,
              threads: Optional[int], log=lambda m: None, quiet: float = 0.0) -> dict:
    rows, info = [], {}
    for kind in kinds:
        if kind == "train":
            from xlfast.bench.train import corpora

            if "grk-it" not in corpora(["grk-it"]):
                continue
        workers: dict[str, list[_Child]] = {}
        try:
            for name, spec in configs:
                args = [sys.executable, "-m", "xlfast.bench.load", "--worker", kind, "--n", str(n),
                        "--csls-dim", str(csls_dim)]
                if dim:
                    args += ["--dim", str(dim)]
                if threads:
                    args += ["--threads", str(threads)]
                env = _config_env(spec)
                pairs = 2 if any(sc in ("two", "three") for sc in scenarios) else 1
                workers[name] = [_Child(args, env) for _ in range(pairs)]
            for name, pair in workers.items():
                ready = [w.read(timeout=600) for w in pair]
                info[f"{kind}/{name}"] = {"env": dict(configs)[name], **ready[0]}
                log(f"{kind}/{name}: ready ({ready[0]['applied']})")
            limit = 60 + 10 * seconds[kind]
            got: dict[tuple[str, str], list[dict]] = {}
            for r in range(rounds):
                for scenario in scenarios:
                    for name, pair in workers.items():  # configurations alternate inside every scenario
                        res = run_scenario(scenario, pair, warm, seconds[kind], limit, quiet)
                        got.setdefault((name, scenario), []).append(res)
                        log(f"{kind} round {r + 1} {name:>8} {scenario:>6}: {1000 * res['per_unit']:.0f} ms/unit "
                            f"(background {res['background']:.1f}, units per thread count {res['threads_used']})")
        finally:
            for pair in workers.values():
                for w in pair:
                    w.kill()
        for name, _ in configs:
            alone = statistics.median(x["per_unit"] for x in got.get((name, "alone"), [])) if (name, "alone") in got else None
            for scenario in scenarios:
                runs = got[(name, scenario)]
                per = statistics.median(x["per_unit"] for x in runs)
                row = {"kind": kind, "config": name, "scenario": scenario, "ms_per_unit": 1000 * per,
                       "vs_alone": per / alone if alone else None,
                       "rounds": [1000 * x["per_unit"] for x in runs],
                       "background": max(x["background"] for x in runs),
                       "round_background": [x["background"] for x in runs],
                       "threads_end": [x["threads_end"] for x in runs],
                       "threads_used": [x["threads_used"] for x in runs]}
                if kind in ("train", "demo"):
                    row["epoch_s"] = per * info[f"{kind}/{name}"].get("steps_per_epoch", 0)
                rows.append(row)
    return {"rows": rows, "workers": info, "cpu_budget": _budget(), "online_cpus": os.cpu_count()}


def _budget() -> int:
    from xlfast.threads import cpu_budget

    return cpu_budget()


def _main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m xlfast.bench.load")
    ap.add_argument("--worker", choices=KINDS, required=True)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--csls-dim", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    worker(a.worker, a.dim, a.n, a.csls_dim, a.threads)


if __name__ == "__main__":
    _main(sys.argv[1:])
