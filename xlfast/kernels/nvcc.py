"""How the 'cuda' backends load their kernels: csrc/cuda/<op>.cu, built with nvcc at first use into a shared
library cached under $XLFAST_CACHE (default ~/.cache/xlfast, keyed by the hash of the source and of the
headers in csrc it may include) and loaded with
ctypes through its extern "C" entry points — no torch headers, so no coupling to torch's C++ ABI.

Building needs nvcc only (tests build and load the libraries on machines without a GPU); the backends'
loaders also require a visible GPU, so a registry never offers them where none is.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CUDA_SOURCES = CSRC / "cuda"


def build(op: str) -> ctypes.CDLL:
    """The loaded library of csrc/cuda/<op>.cu (built now unless cached)."""
    source = CUDA_SOURCES / f"{op}.cu"
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        raise RuntimeError("nvcc not found")
    if not source.exists():
        raise RuntimeError(f"{source} is missing (installed without the sources)")
    digest = hashlib.sha1(source.read_bytes())
    for header in sorted(CSRC.glob("*.h")):
        digest.update(header.read_bytes())
    arch = _arch()
    digest.update(" ".join(arch).encode())
    tag = digest.hexdigest()[:12]
    cache = Path(os.environ.get("XLFAST_CACHE", Path.home() / ".cache" / "xlfast"))
    lib = cache / f"{op}_cuda_{tag}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        command = [str(nvcc), "-O2", "-shared", "-Xcompiler", "-fPIC", *arch, str(source), "-o", str(tmp)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed: {proc.stderr.strip().splitlines()[-1:]}")
        os.replace(tmp, lib)
    return ctypes.CDLL(str(lib))


def _arch() -> list[str]:
    """Machine code for the visible GPU (else nvcc's default target, whose PTX the driver compiles at load):
    without it a Hopper card runs code built for a years-older architecture."""
    if not torch.cuda.is_available():
        return []
    major, minor = torch.cuda.get_device_capability()
    return ["-gencode", f"arch=compute_{major}{minor},code=sm_{major}{minor}"]


def require_gpu() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (torch.cuda.is_available() is False)")


def stream_handle(device: torch.device) -> int:
    """The current CUDA stream of `device`, for kernels launched outside torch."""
    return torch.cuda.current_stream(device).cuda_stream
