"""The 'cuda' backend of xlfast.kernels.csls: csrc/cuda/csls.cu, built with nvcc at first use and loaded
with ctypes through its extern "C" entry point `xlfast_csls_topk_rows` (no torch ABI coupling).

Available only where torch.cuda.is_available() and nvcc builds the source; otherwise the loader raises,
so the registry reports the backend as unavailable (and a forced backend='cuda' is BackendUnavailable).
Not measured: it has only been compiled (tests/test_cuda_compile.py), never run, on the development
machine, which has no GPU; hence its last rank. X and Y are copied whole to the GPU (memory: (N + M)·d·4
bytes there), one thread block per query row; column statistics relaunch with X and Y swapped.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

from xlfast.errors import XlfastError
from xlfast.kernels.csls_device import RowTopkBackend

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "cuda" / "csls.cu"
MAX_K = 10  # the kernel's k ≤ 32 instantiation needs more than the default 48 KiB of shared memory


def _build() -> ctypes.CDLL:
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        raise RuntimeError("nvcc not found")
    if not SOURCE.exists():
        raise RuntimeError(f"{SOURCE} is missing (installed without the sources)")
    tag = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XLFAST_CACHE", Path.home() / ".cache" / "xlfast"))
    lib = cache / f"csls_cuda_{tag}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([str(nvcc), "-O2", "-shared", "-Xcompiler", "-fPIC", str(SOURCE), "-o", str(tmp)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed: {proc.stderr.strip().splitlines()[-1:]}")
        os.replace(tmp, lib)
    so = ctypes.CDLL(str(lib))
    fn = so.xlfast_csls_topk_rows
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_void_p]
    return so


class CudaBackend(RowTopkBackend):
    name = "cuda"
    max_k = MAX_K

    def __init__(self, so: ctypes.CDLL):
        self._fn = so.xlfast_csls_topk_rows
        self.device = torch.device("cuda")

    def _launch(self, At, Bt, vals, idx, rt, ct, k, mode, exclude_self):
        n, m, d = At.shape[0], Bt.shape[0], At.shape[1]
        stream = torch.cuda.current_stream(self.device).cuda_stream
        err = self._fn(At.data_ptr(), Bt.data_ptr(), n, m, d, k, mode, rt.data_ptr(), ct.data_ptr(),
                       int(bool(exclude_self)), vals.data_ptr(), idx.data_ptr(), stream)
        if err != 0:
            raise XlfastError(f"csls backend 'cuda': kernel launch failed (cudaError {err})")


def load() -> CudaBackend:
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (torch.cuda.is_available() is False)")
    return CudaBackend(_build())
