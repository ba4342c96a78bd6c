"""Backend registry shared by every hot path in `xlfast.kernels`, device-aware.

Each op registers its backends (torch reference, numba, C++, triton, cuda) with a loader and a rank per device
type it runs on. A call asks `choose()` with the device types it may run on, best first — `devices_for(...)`:
the accelerator that holds its tensors, else a visible GPU, then the CPU — and gets the best-ranked backend that
loads on the first of them that has one. Availability is decided once per process and the pick is reported
once. A backend the user *asked for* (argument, `--backend`, or the XLFAST_BACKEND / XLFAST_<OP>_BACKEND
environment variables) that cannot run is an error, never a silent fallback.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from xlfast.errors import BackendUnavailable

log = logging.getLogger("xlfast")


@functools.cache
def bf16_native(device_type: str = "cpu") -> bool:
    """Whether the hardware computes bf16 natively (AVX512-BF16 or AMX on an x86 CPU, BF16 on an Arm one,
    or a recent GPU): where it does not, bf16 autocast and bf16 tiles only add conversions. oneDNN's own
    check is not enough on x86: it says yes for any AVX-512 CPU, where it emulates bf16 (a grk-it SWcnn
    training step on a 2-core Ice Lake: 345 ms under bf16 autocast against 154 ms in float32)."""
    try:
        if device_type == "cuda":
            return torch.cuda.is_bf16_supported()
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def gpu() -> str | None:
    """The device type of the GPU torch sees ('cuda'), or None; decided once. XLFAST_DEVICE=cpu keeps every
    automatic choice on the CPU (tensors already on a GPU, or `--device cuda`, still run there)."""
    if os.environ.get("XLFAST_DEVICE", "").strip().lower() == "cpu":
        return None
    return "cuda" if torch.cuda.is_available() else None


def devices_for(*arrays) -> tuple[str, ...]:
    """The device types a call on `arrays` may run on, best first: the accelerator that holds any of them
    (then the CPU, after a copy); for arrays on the CPU a visible GPU (copying N + M vectors there is cheap
    beside an N×M search), then the CPU."""
    for a in arrays:
        if isinstance(a, torch.Tensor) and a.device.type != "cpu":
            return (a.device.type, "cpu")
    accelerator = gpu()
    return (accelerator, "cpu") if accelerator else ("cpu",)


def load_from(module: str, factory: str) -> Callable[[], Any]:
    """A loader that imports `module` only when its backend is first wanted, and calls its `factory`."""
    return lambda: getattr(importlib.import_module(module), factory)()


@dataclass
class Backend:
    name: str
    ranks: dict[str, int]  # device type → rank there; lower is preferred when choosing automatically
    loader: Callable[[], Any]  # returns the implementation; raises when unavailable
    _impl: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)
    _probed: bool = field(default=False, repr=False)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.ranks)

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

    def register(self, name: str, loader: Callable[[], Any], *,
                 devices: Sequence[str] | Mapping[str, int] = ("cpu",), rank: int = 100) -> None:
        """`devices`: the device types the backend runs on, each at `rank`, or a mapping device type → rank
        (a GPU kernel may rank first on 'cuda' and last on 'cpu', where it only runs interpreted)."""
        ranks = dict(devices) if isinstance(devices, Mapping) else {d: rank for d in devices}
        self.backends[name] = Backend(name, ranks, loader)

    def names(self, device: str | None = None) -> list[str]:
        """Every backend (or those that run on `device`), best-ranked first."""
        if device is None:
            return sorted(self.backends, key=lambda n: min(self.backends[n].ranks.values()))
        here = [n for n in self.backends if device in self.backends[n].ranks]
        return sorted(here, key=lambda n: self.backends[n].ranks[device])

    def available(self, device: str = "cpu") -> list[str]:
        return [n for n in self.names(device) if self.backends[n].available()]

    def requested(self, requested: str | None = None) -> str | None:
        if requested and requested != "auto":
            return requested
        env = os.environ.get(f"XLFAST_{self.op.upper()}_BACKEND") or os.environ.get("XLFAST_BACKEND")
        return env if env and env != "auto" else None

    def choose(self, devices: str | Sequence[str] = "cpu", requested: str | None = None, *,
               fits: Callable[[Any], bool] | None = None) -> tuple[str, Any]:
        """(name, implementation) for a call that may run on `devices` (best first). `fits(impl)` turns
        down automatic picks that cannot serve this call (e.g. a kernel's largest k); a requested backend
        is never turned down here, it fails loudly itself."""
        devices = (devices,) if isinstance(devices, str) else tuple(devices)
        want = self.requested(requested)
        if want is not None:
            if want not in self.backends:
                raise BackendUnavailable(
                    f"unknown {self.op} backend '{want}' (known: {', '.join(self.names())})"
                )
            backend = self.backends[want]
            device = next((d for d in devices if d in backend.ranks), None)
            if device is None:
                raise BackendUnavailable(f"{self.op} backend '{want}' does not run on {' or '.join(devices)}")
            impl = backend.load()
            self._announce(want, device, forced=True)
            return want, impl
        for device in devices:
            for name in self.names(device):
                backend = self.backends[name]
                if backend.available() and (fits is None or fits(backend.load())):
                    self._announce(name, device, forced=False)
                    return name, backend.load()
        raise BackendUnavailable(f"no {self.op} backend runs on {' or '.join(devices)}")

    def _announce(self, name: str, device: str, forced: bool) -> None:
        if (name, device) not in self._announced:
            self._announced.add((name, device))
            how = "requested" if forced else "auto"
            log.info("%s: using backend %s on %s (%s)", self.op, name, device, how)
