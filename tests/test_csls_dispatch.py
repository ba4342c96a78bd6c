"""Device-aware dispatch: the registry's per-device ranks, and csls choosing a GPU backend by itself where
the tensors are on a GPU or one is visible. There is no GPU here, so the GPUs are fakes: a backend
registered for the 'meta' device (tensors without data), and a stand-in GPU kernel that computes on the CPU
behind a device type of its own — which also runs the device backends' shared plumbing (device.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlfast.errors import BackendUnavailable, XlfastError
from xlfast.kernels import csls as C
from xlfast.kernels import dispatch
from xlfast.kernels.csls.base import MARGIN_EPS, DeviceBackend, Mode, TopK, clip_k
from xlfast.kernels.csls.device import RowTopkBackend
from xlfast.kernels.csls.reference import reference_means, reference_scores
from xlfast.kernels.subword_embed import registry as embed_registry
from test_csls import assert_topk_matches, tolerance, unit_rows


def test_registry_ranks_per_device_and_falls_back_in_device_order():
    reg = dispatch.KernelRegistry("op")
    made = []

    def loader(name, fail=False):
        def load():
            if fail:
                raise RuntimeError(f"{name} cannot run")
            made.append(name)
            return name
        return load

    reg.register("cpu-fast", loader("cpu-fast"), devices={"cpu": 10})
    reg.register("portable", loader("portable"), devices=("cpu", "gpu"), rank=90)  # one rank everywhere
    reg.register("gpu-kernel", loader("gpu-kernel"), devices={"gpu": 10, "cpu": 95})
    reg.register("gpu-broken", loader("gpu-broken", fail=True), devices={"gpu": 5})
    assert reg.names("gpu") == ["gpu-broken", "gpu-kernel", "portable"]
    assert reg.names("cpu") == ["cpu-fast", "portable", "gpu-kernel"]
    assert reg.choose(("gpu", "cpu")) == ("gpu-kernel", "gpu-kernel")  # the broken one is skipped, silently
    assert reg.choose("cpu") == ("cpu-fast", "cpu-fast")
    assert reg.choose(("gpu", "cpu"), fits=lambda impl: impl == "cpu-fast") == ("cpu-fast", "cpu-fast")
    assert reg.choose(("gpu", "cpu"), requested="cpu-fast") == ("cpu-fast", "cpu-fast")  # runs on the 2nd device
    with pytest.raises(BackendUnavailable, match="gpu-broken.*not available here.*cannot run"):
        reg.choose(("gpu", "cpu"), requested="gpu-broken")  # asked for: fails loudly
    with pytest.raises(BackendUnavailable, match="'gpu-broken' does not run on cpu"):
        reg.choose("cpu", requested="gpu-broken")
    with pytest.raises(BackendUnavailable, match="no op backend runs on tpu"):
        reg.choose("tpu")


def test_devices_follow_the_tensors_then_a_visible_gpu(monkeypatch):
    X = np.zeros((2, 3), np.float32)
    monkeypatch.setattr(dispatch, "gpu", lambda: None)
    assert dispatch.devices_for(X, torch.zeros(2, 3)) == ("cpu",)
    assert dispatch.devices_for(X, torch.zeros(2, 3, device="meta")) == ("meta", "cpu")
    monkeypatch.setattr(dispatch, "gpu", lambda: "cuda")
    assert dispatch.devices_for(X) == ("cuda", "cpu")  # CPU inputs go to the GPU that is there


def test_xlfast_device_cpu_keeps_automatic_choices_off_a_gpu(monkeypatch):
    from xlfast.train import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        for setting, expected in (("cpu", None), ("", "cuda")):
            monkeypatch.setenv("XLFAST_DEVICE", setting)
            dispatch.gpu.cache_clear()
            assert dispatch.gpu() == expected
            assert pick_device("auto").type == (expected or "cpu")
            assert dispatch.devices_for(np.zeros((2, 3), np.float32)) == ((expected, "cpu") if expected else ("cpu",))
    finally:
        dispatch.gpu.cache_clear()


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_counts_as_native_on_x86_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    # oneDNN says bf16 is supported on every AVX-512 CPU, where it is emulated and training slower.
    monkeypatch.setattr(dispatch.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    dispatch.bf16_native.cache_clear()
    try:
        assert dispatch.bf16_native("cpu") is native
    finally:
        dispatch.bf16_native.cache_clear()


def test_gpu_kernels_rank_first_on_the_gpu():
    # torch's CSLS backend tiles on the CPU; on a GPU the GPU paths, in the order measured on an H200
    assert C.registry.names("cuda") == ["blocked", "triton", "cuda"]
    assert C.registry.names("cpu")[:3] == ["cpp", "numba", "torch"]
    assert embed_registry.names("cuda") == ["triton", "cuda", "torch"] and embed_registry.names("cpu")[:2] == ["cpp", "numba"]


class TorchRows(RowTopkBackend):
    """A stand-in GPU kernel: the top-k of every row of A against B in plain torch, on the CPU."""

    name = "fake-gpu"

    def __init__(self, max_k=None):
        self.device, self.max_k, self.launches = torch.device("cpu"), max_k, 0

    def _launch(self, A, B, vals, idx, rterm, cterm, k, mode, exclude_self):
        self.launches += 1
        S = A.double() @ B.double().T
        if mode == Mode.CSLS:
            S = 2 * S - rterm[:, None] - cterm[None, :]
        elif mode == Mode.MARGIN:
            S = 2 * S / (rterm[:, None] + cterm[None, :]).clamp_min(MARGIN_EPS)
        if exclude_self:
            d = torch.arange(min(S.shape))
            S[d, d] = -float("inf")
        top = S.topk(k, dim=1)
        vals.copy_(top.values)
        idx.copy_(top.indices)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A visible GPU of device type 'fakegpu' whose only csls backend is TorchRows (which, like Triton's
    interpreter, also runs on the CPU, ranked last there)."""
    impl = TorchRows()
    monkeypatch.setattr(dispatch, "gpu", lambda: "fakegpu")
    monkeypatch.setitem(C.registry.backends, "fake-gpu",
                        dispatch.Backend("fake-gpu", {"fakegpu": 1, "cpu": 99}, lambda: impl))
    return impl


@pytest.mark.parametrize("metric", C.METRICS)
def test_a_visible_gpu_is_chosen_automatically_and_gives_the_reference(fake_gpu, metric):
    X, Y = unit_rows(40, 12, 1), unit_rows(55, 12, 2)
    got = C.topk(X, Y, 5, metric=metric, knn=4, both=True, normalized=True)
    assert fake_gpu.launches == (2 if metric == "cos" else 4)  # means (2 directions) + top-k (2 directions)
    ref = reference_scores(X, Y, metric, knn=4, normalized=True)
    tol = tolerance(metric, 12, reference_means(X, Y, 4, normalized=True))
    assert_topk_matches(got.scores, got.indices, ref, 5, tol, f"fake gpu {metric}")
    assert_topk_matches(got.rev_scores, got.rev_indices, ref.T, 5, tol, f"fake gpu {metric} rev")
    # rows= and exclude_self through the device search; unnormalised input normalised on the device
    part = C.topk(X * 3, Y, 5, metric=metric, knn=4, rows=[7, 0, 7])
    assert torch.equal(part.indices, got.indices[[7, 0, 7]])
    own = C.topk(X, X, 3, metric=metric, knn=4, exclude_self=True, normalized=True)
    assert not (own.indices == torch.arange(40)[:, None]).any()
    r_T, r_S = C.neighbourhood_means(X, Y, 4, normalized=True)
    ref_T, ref_S = reference_means(X, Y, 4, normalized=True)
    np.testing.assert_allclose(r_T.double(), ref_T, atol=tolerance("cos", 12))
    np.testing.assert_allclose(r_S.double(), ref_S, atol=tolerance("cos", 12))


def test_the_gpu_is_passed_over_where_it_cannot_serve_the_call(fake_gpu):
    X, Y = unit_rows(30, 8, 3), unit_rows(20, 8, 4)
    C.topk(X, Y, 3, strategy=C.Bf16())  # the certified bf16 path runs on the CPU backends
    C.topk(X, Y, 3, strategy=C.Exact(mem="64K"))
    assert fake_gpu.launches == 1
    fake_gpu.max_k = 4  # a kernel with a largest k: an automatic pick moves on to the CPU
    C.topk(X, Y, 5)
    assert fake_gpu.launches == 1
    with pytest.raises(XlfastError, match="supports k ≤ 4"):  # asked for by name: fails loudly
        C.topk(X, Y, 5, backend="fake-gpu")
    with pytest.raises(XlfastError, match="runs on the CPU backends, not on 'fake-gpu'"):
        C.topk(X, Y, 3, backend="fake-gpu", strategy=C.Approx("ivf"))


class MetaGpu(DeviceBackend):
    """A GPU backend for tensors on the 'meta' device (shapes without data): records what it was given."""

    name = "meta-gpu"
    device = torch.device("meta")

    def __init__(self):
        self.seen = []

    def neighbourhood_means(self, Xn, Yn, k_rows, k_cols, exclude_self):
        self.seen.append(("means", Xn.device.type, Yn.device.type))
        return torch.zeros(Xn.shape[0], device=self.device), torch.zeros(Yn.shape[0], device=self.device)

    def topk(self, Xn, Yn, k_rows, k_cols, mode, r_T, r_S, exclude_self, both):
        self.seen.append(("topk", Xn.device.type, Yn.device.type, r_T.device.type))
        n = Xn.shape[0]
        return TopK(torch.zeros(n, k_rows), torch.full((n, k_rows), 7, dtype=torch.int64))


def test_device_tensors_are_searched_by_a_backend_of_their_device_without_visiting_the_cpu(monkeypatch):
    impl = MetaGpu()
    monkeypatch.setattr(dispatch, "gpu", lambda: None)
    monkeypatch.setitem(C.registry.backends, "meta-gpu", dispatch.Backend("meta-gpu", {"meta": 1}, lambda: impl))
    X, Y = torch.empty(9, 16, device="meta"), torch.empty(11, 16, device="meta")  # no data: .cpu() would fail
    got = C.topk(X, Y, 4, metric="csls", knn=3)
    assert impl.seen == [("means", "meta", "meta"), ("topk", "meta", "meta", "meta")]
    assert got.indices.shape == (9, clip_k(4, 11, False)) and (got.indices == 7).all()
    with pytest.raises(XlfastError, match="dimension mismatch"):
        C.topk(X, torch.empty(3, 5, device="meta"), 2)

