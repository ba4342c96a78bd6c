"""Every csrc/cuda/*.cu compiles with nvcc, and each 'cuda' backend's library builds and loads with the
ctypes signatures it declares (no GPU needed for either); skipped where nvcc is absent."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from xlfast.kernels import nvcc

SOURCES = sorted(nvcc.CUDA_SOURCES.glob("*.cu"))
NVCC = shutil.which("nvcc")
ENTRY_POINTS = {"csls": ["xlfast_csls_topk_rows"],
                "subword_embed": ["xlfast_subword_embed_forward_f32", "xlfast_subword_embed_grad_pieces_f32"]}


def test_every_cuda_source_has_a_backend():
    assert {s.stem for s in SOURCES} == set(ENTRY_POINTS)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_cu_compiles(source, tmp_path):
    obj = tmp_path / (source.stem + ".o")
    proc = subprocess.run([NVCC, "-arch=sm_80", "-O2", "-c", str(source), "-o", str(obj)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", "-g", str(obj)], capture_output=True, text=True, check=True).stdout
        for name in ENTRY_POINTS[source.stem]:  # extern "C": loadable with ctypes, no torch ABI coupling
            assert name in symbols


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_backend_libraries_build_and_load(tmp_path, monkeypatch):
    from xlfast.kernels.csls import cuda as csls_cuda
    from xlfast.kernels.subword_embed import cuda as embed_cuda

    monkeypatch.setenv("XLFAST_CACHE", str(tmp_path))
    for op, library in (("csls", csls_cuda.library), ("subword_embed", embed_cuda.library)):
        so = library()
        for name in ENTRY_POINTS[op]:
            fn = getattr(so, name)
            assert fn.argtypes and fn.restype is not None
        assert list(tmp_path.glob(f"{op}_cuda_*.so"))
