"""Backend registry shared by every hot path in `xlfast.kernels`.

Each kernel module registers its backends (torch reference, numba, C++, triton, cuda) with a loader
and a rank. `choose()` picks the best-ranked backend that loads on the device, decides availability
once per process, and reports the pick once. A backend the user *asked for* (argument, `--backend`, or
the XLFAST_BACKEND / XLFAST_<OP>_BACKEND environment variables) that cannot run is an error, never a
silent fallback.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from xlfast.errors import BackendUnavailable

log = logging.getLogger("xlfast")


@functools.cache
def bf16_native(device_type: str = "cpu") -> bool:
    """Whether the hardware computes bf16 natively (oneDNN with AVX512-BF16/AMX on the CPU, or a recent
    GPU): where it does not, bf16 autocast and bf16 tiles only add conversions."""
    import torch

    try:
        if device_type == "cuda":
            return torch.cuda.is_bf16_supported()
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Backend:
    name: str
    devices: tuple[str, ...]
    rank: int  # lower is preferred when choosing automatically
    loader: Callable[[], Any]  # returns the implementation; raises when unavailable
    _impl: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)
    _probed: bool = field(default=False, repr=False)

    def load(self) -> Any:
        if not self._probed:
            self._probed = True
            try:
                self._impl = self.loader()
            except Exception as exc:  # noqa: BLE001 - any import/compile failure means "not here"
                self._error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if self._impl is None:
            raise BackendUnavailable(f"backend '{self.name}' is not available here ({self._error})")
        return self._impl

    def available(self) -> bool:
        try:
            self.load()
            return True
        except BackendUnavailable:
            return False


class KernelRegistry:
    """The backends of one operation (e.g. 'csls', 'subword_embed')."""

    def __init__(self, op: str):
        self.op = op
        self.backends: dict[str, Backend] = {}
        self._announced: set[tuple[str, str]] = set()

    def register(self, name: str, loader: Callable[[], Any], *, devices=("cpu",), rank: int = 100) -> None:
        self.backends[name] = Backend(name, tuple(devices), rank, loader)

    def names(self) -> list[str]:
        return sorted(self.backends, key=lambda n: self.backends[n].rank)

    def available(self, device: str = "cpu") -> list[str]:
        return [n for n in self.names() if device in self.backends[n].devices and self.backends[n].available()]

    def requested(self, requested: str | None = None) -> str | None:
        if requested and requested != "auto":
            return requested
        env = os.environ.get(f"XLFAST_{self.op.upper()}_BACKEND") or os.environ.get("XLFAST_BACKEND")
        return env if env and env != "auto" else None

    def choose(self, device: str = "cpu", requested: str | None = None) -> tuple[str, Any]:
        want = self.requested(requested)
        if want is not None:
            if want not in self.backends:
                raise BackendUnavailable(
                    f"unknown {self.op} backend '{want}' (known: {', '.join(self.names())})"
                )
            backend = self.backends[want]
            if device not in backend.devices:
                raise BackendUnavailable(f"{self.op} backend '{want}' does not run on {device}")
            impl = backend.load()
            self._announce(want, device, forced=True)
            return want, impl
        for name in self.names():
            backend = self.backends[name]
            if device in backend.devices and backend.available():
                self._announce(name, device, forced=False)
                return name, backend.load()
        raise BackendUnavailable(f"no {self.op} backend runs on {device}")

    def _announce(self, name: str, device: str, forced: bool) -> None:
        if (name, device) not in self._announced:
            self._announced.add((name, device))
            how = "requested" if forced else "auto"
            log.info("%s: using backend %s on %s (%s)", self.op, name, device, how)
