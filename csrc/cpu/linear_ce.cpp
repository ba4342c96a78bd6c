// The row pass of the fused linear cross-entropy on the CPU: for each row of a chunk of logits (the
// GEMMs around it run in BLAS), the fp32 log-sum-exp, the row's loss, and — in place — the gradient of
// the loss with respect to the logits, softmax(x) - onehot(target).
//
// Why C++ beside Numba: the exponential. Numba has no vector exp here (no SVML), so every element costs
// a scalar libm call; here it is a polynomial on 8-float vectors, compiled for AVX2/FMA and AVX-512 beside
// a generic variant (multi_isa.h). One row is read three times (max, exp-and-sum, scale), all from L2: a
// 20k-word row is 80 KB. bf16 logits (the output of bf16 GEMMs) are widened a row at a time.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

#define XL_KERNELS "linear_ce_kernels.h"
#include "multi_isa.h"

using F32Fn = void (*)(float*, const float*, const int64_t*, float*, int64_t, int64_t, bool, int);
using Bf16Fn = void (*)(uint16_t*, const float*, const int64_t*, float*, int64_t, int64_t, bool, int);

// The variant this CPU runs, chosen once at import (as csls.cpp does).
struct Kernels {
  Isa isa;
  F32Fn f32;
  Bf16Fn bf16;
};

static Kernels pick_kernels() {
  const Isa isa = best_isa();
#if XL_MULTI_ISA
  if (isa == Isa::avx512) return {isa, avx512::rows_f32, avx512::rows_bf16};
  if (isa == Isa::avx2) return {isa, avx2::rows_f32, avx2::rows_bf16};
#endif
  return {isa, generic::rows_f32, generic::rows_bf16};
}

static const Kernels kKernels = pick_kernels();

// Per row r: loss[r] = logsumexp(x_r + bias) - (x_r + bias)[target[r]]; with `grad`, x_r becomes
// softmax(x_r + bias) - onehot(target[r]). Targets must lie in [0, V) (ignored rows were removed before).
// `logits`: float32, or int16 holding bf16 bits.
static void rows_(py::array logits, py::array_t<int64_t, py::array::c_style> target, py::object bias_obj,
                  py::array_t<float, py::array::c_style> loss, bool grad, int threads) {
  const bool bf16 = py::isinstance<py::array_t<int16_t>>(logits);
  if (!bf16 && !py::isinstance<py::array_t<float>>(logits)) throw std::invalid_argument("logits must be float32 or bf16 bits (int16)");
  if (!(logits.flags() & py::array::c_style)) throw std::invalid_argument("logits must be C-contiguous");
  if (logits.ndim() != 2 || target.ndim() != 1 || loss.ndim() != 1) throw std::invalid_argument("expected [C, V], [C], [C]");
  const int64_t C = logits.shape(0), V = logits.shape(1);
  if (target.shape(0) != C || loss.shape(0) != C) throw std::invalid_argument("targets and losses must have one entry per row");
  const float* bias = nullptr;
  py::array_t<float, py::array::c_style> bias_arr;
  if (!bias_obj.is_none()) {
    bias_arr = bias_obj.cast<py::array_t<float, py::array::c_style>>();
    if (bias_arr.ndim() != 1 || bias_arr.shape(0) != V) throw std::invalid_argument("bias must have one entry per class");
    bias = bias_arr.data();
  }
  void* x = logits.mutable_data();
  const int64_t* tgt = target.data();
  float* out = loss.mutable_data();
  for (int64_t r = 0; r < C; ++r)
    if (tgt[r] < 0 || tgt[r] >= V) throw std::out_of_range("target outside [0, V)");
  py::gil_scoped_release release;
  threads = std::max(threads, 1);
  if (bf16)
    kKernels.bf16(static_cast<uint16_t*>(x), bias, tgt, out, C, V, grad, threads);
  else
    kKernels.f32(static_cast<float*>(x), bias, tgt, out, C, V, grad, threads);
}

// dst[j, v] = bf16(src[v, j]): the table transposed for the forward GEMM (xlfast/kernels/linear_ce/base.py
// says why), in 32 x 32 tiles so that both sides are read and written a cache line at a time (torch's
// strided copy_ took 13-16 ms for a 20k x 500 table on the 2-core AMX CPU, this 3-6 ms).
static void transpose_to_bf16(py::array_t<float, py::array::c_style> src, py::array_t<int16_t, py::array::c_style> dst,
                              int threads) {
  if (src.ndim() != 2 || dst.ndim() != 2 || dst.shape(0) != src.shape(1) || dst.shape(1) != src.shape(0))
    throw std::invalid_argument("expected src [V, d] and dst [d, V]");
  constexpr int64_t kTile = 32;
  const int64_t V = src.shape(0), d = src.shape(1);
  const float* s = src.data();
  auto* o = reinterpret_cast<uint16_t*>(dst.mutable_data());
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(std::max(threads, 1))
  for (int64_t v0 = 0; v0 < V; v0 += kTile) {
    const int64_t v1 = std::min(v0 + kTile, V);
    for (int64_t j0 = 0; j0 < d; j0 += kTile) {
      const int64_t j1 = std::min(j0 + kTile, d);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t v = v0; v < v1; ++v) o[j * V + v] = generic::to_bf16(s[v * d + j]);
    }
  }
}

PYBIND11_MODULE(_linear_ce_cpu, m) {
  m.doc() = "Row pass of the fused linear cross-entropy (fp32 log-sum-exp, in-place logit gradient)";
  m.def("rows_", &rows_, py::arg("logits"), py::arg("target"), py::arg("bias"), py::arg("loss"), py::arg("grad"),
        py::arg("threads"));
  m.def("transpose_to_bf16", &transpose_to_bf16, py::arg("src"), py::arg("dst"), py::arg("threads"));
  m.attr("isa") = isa_name(kKernels.isa);
}
