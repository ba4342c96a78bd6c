"""keep_freed_memory: a large block allocated again after being freed comes back resident, not page-faulted."""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")

SIZE = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MB): unmapped on free by default
SCRIPT = textwrap.dedent(f"""
    import ctypes, resource, sys
    from xlfast.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    def faults_of_a_fresh_block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc({SIZE})
        libc.memset(p, 1, {SIZE})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        libc.free(p)
        return after - before
    faults_of_a_fresh_block()
    print(faults_of_a_fresh_block())
""")


def _second_allocation_faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def test_freed_large_blocks_are_reused_without_page_faults():
    pages = SIZE // 4096
    assert _second_allocation_faults("default") > pages // 2  # glibc unmaps the block: every page again
    assert _second_allocation_faults("keep") < pages // 20


def test_training_keeps_freed_memory(monkeypatch):
    from types import SimpleNamespace

    from xlfast import train

    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(True) or True)
    train._machine(SimpleNamespace(device="cpu", threads=None, backend=None))
    assert calls == [True]
