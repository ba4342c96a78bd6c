"""Every csrc/cuda/*.cu compiles with nvcc (no GPU needed); skipped where nvcc is absent."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parent.parent / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_cu_compiles(source, tmp_path):
    obj = tmp_path / (source.stem + ".o")
    proc = subprocess.run([NVCC, "-arch=sm_80", "-O2", "-c", str(source), "-o", str(obj)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert obj.stat().st_size > 0
    if source.stem == "csls" and shutil.which("nm"):
        symbols = subprocess.run(["nm", "-g", str(obj)], capture_output=True, text=True, check=True).stdout
        assert "xlfast_csls_topk_rows" in symbols  # extern "C": loadable with ctypes, no torch ABI coupling



@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_backend_library_builds_and_loads(tmp_path, monkeypatch):
    """The 'cuda' csls backend's nvcc build + ctypes load (no GPU needed to build and dlopen)."""
    from xlfast.kernels import csls_cuda

    monkeypatch.setenv("XLFAST_CACHE", str(tmp_path))
    so = csls_cuda._build()
    assert so.xlfast_csls_topk_rows.restype is not None
    assert list(tmp_path.glob("csls_cuda_*.so"))
