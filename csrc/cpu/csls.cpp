// Running top-k selection over one similarity tile, for xlfast.kernels.csls (built as xlfast._csls_cpu).
//
// The tile S = X_blk · Y_blkᵀ comes from OpenBLAS through numpy (float32) or from torch's oneDNN bf16
// GEMM (bfloat16, passed as uint16); these kernels only select (csls_kernels.h):
//
// rows_update:  per row of the tile (OpenMP over rows) keep the k best scores seen so far.
// fused_update: ONE read of the tile updates the row buffers AND the column buffers. Threads split the
//               tile's columns into stripes, so each column buffer has one owner (no atomics); each
//               stripe walks the rows, keeping private row candidates (stripes × rows × k, bounded by the
//               tile, not by M) that beat the row's current k-th best; they are merged into the row
//               buffers once per tile. With no row buffers it is the column-only update (cols_update).
// Both scan in chunks of 16: a "does anything in the chunk beat its threshold" test first (one AVX-512
// compare where the CPU has AVX-512), the scalar insertion path only on a hit — after the first tiles
// nearly every chunk is one vector compare.
// rescore:      out[r, c] = X[r] · Y[idx[r, c]] in float32 inputs / float64 accumulation (−inf where
//               idx < 0): the exact re-scoring of bf16 candidates.
// The margin's clamp `margin_eps` comes from Python (xlfast.kernels.csls.base.MARGIN_EPS), defined there once.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "../topk_insert.h"

namespace py = pybind11;
using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t CH = 16;  // chunk of the vectorised pre-test (one AVX-512 register of float32)

int n_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

struct Buffers {
  float* v = nullptr;
  int64_t* ix = nullptr;
  int64_t rows = 0, k = 0;
};

#define XL_KERNELS "csls_kernels.h"
#include "multi_isa.h"

template <typename T>
using SelectFn = void (*)(const T*, int64_t, int64_t, int64_t, int64_t, Buffers, Buffers, int, const float*,
                          const float*, bool, float, int64_t);
using RescoreFn = void (*)(const float*, const float*, const int64_t*, float*, int64_t, int64_t, int64_t);

struct Kernels {
  Isa isa;
  SelectFn<float> select_f32;
  SelectFn<uint16_t> select_bf16;
  RescoreFn rescore;
};

const Kernels& kernels() {  // the variant this CPU runs, chosen once
  static const Kernels chosen = [] {
    switch (best_isa()) {
#if XL_MULTI_ISA
      case Isa::avx512:
        return Kernels{Isa::avx512, &avx512::select_tile<float>, &avx512::select_tile<uint16_t>,
                       &avx512::rescore_kernel};
      case Isa::avx2:
        return Kernels{Isa::avx2, &avx2::select_tile<float>, &avx2::select_tile<uint16_t>, &avx2::rescore_kernel};
#endif
      default:
        return Kernels{Isa::generic, &generic::select_tile<float>, &generic::select_tile<uint16_t>,
                       &generic::rescore_kernel};
    }
  }();
  return chosen;
}

Buffers buffers(F32& vals, I64& idx) {
  if (vals.ndim() != 2 || idx.ndim() != 2) throw std::invalid_argument("expected 2-D top-k buffers");
  if (idx.shape(0) != vals.shape(0) || idx.shape(1) != vals.shape(1))
    throw std::invalid_argument("top-k value and index buffers differ in shape");
  return {vals.mutable_data(), idx.mutable_data(), vals.shape(0), vals.shape(1)};
}

template <typename T>
void dispatch(py::array_t<T, py::array::c_style> S, int64_t i0, int64_t j0, F32 rvals, I64 ridx, F32 cvals,
              I64 cidx, int mode, F32 rterm, F32 cterm, bool exclude_self, float margin_eps, int64_t stripes,
              SelectFn<T> select) {
  if (S.ndim() != 2) throw std::invalid_argument("expected a 2-D tile");
  if (mode < 0 || mode > 2) throw std::invalid_argument("mode must be 0, 1 or 2");
  const int64_t nb = S.shape(0), mb = S.shape(1);
  Buffers r = buffers(rvals, ridx), c = buffers(cvals, cidx);
  const bool rows = r.k > 0 && r.rows > 0, cols = c.k > 0 && c.rows > 0;
  if (nb == 0 || mb == 0 || (!rows && !cols)) return;
  if (rows && i0 + nb > r.rows) throw std::invalid_argument("row buffers do not match the tile");
  if (cols && j0 + mb > c.rows) throw std::invalid_argument("column buffers do not match the tile");
  if (mode && (rterm.size() < i0 + nb || cterm.size() < j0 + mb))
    throw std::invalid_argument("neighbourhood means are shorter than the tile");
  const T* s = S.data();
  const float* rt = rterm.data();
  const float* ct = cterm.data();
  py::gil_scoped_release release;
  select(s, nb, mb, i0, j0, r, c, mode, rt, ct, exclude_self, margin_eps, stripes);
}

F32 empty_f() { return F32(std::vector<py::ssize_t>{0, 1}); }
I64 empty_i() { return I64(std::vector<py::ssize_t>{0, 1}); }

void update(py::array S, int64_t i0, int64_t j0, F32 rvals, I64 ridx, F32 cvals, I64 cidx, int mode, F32 rterm,
            F32 cterm, bool exclude_self, float margin_eps, int64_t stripes = 0) {
  const Kernels& k = kernels();
  if (S.dtype().is(py::dtype::of<float>()))
    dispatch<float>(S.cast<py::array_t<float, py::array::c_style>>(), i0, j0, rvals, ridx, cvals, cidx, mode, rterm,
                    cterm, exclude_self, margin_eps, stripes, k.select_f32);
  else if (S.dtype().is(py::dtype::of<uint16_t>()))  // bfloat16 bits
    dispatch<uint16_t>(S.cast<py::array_t<uint16_t, py::array::c_style>>(), i0, j0, rvals, ridx, cvals, cidx, mode,
                       rterm, cterm, exclude_self, margin_eps, stripes, k.select_bf16);
  else
    throw std::invalid_argument("tile must be float32 or bfloat16 bits (uint16)");
}

void rescore(F32 X, F32 Y, I64 idx, F32 out) {
  if (X.ndim() != 2 || Y.ndim() != 2 || idx.ndim() != 2 || out.ndim() != 2) throw std::invalid_argument("expected 2-D");
  const int64_t n = idx.shape(0), c = idx.shape(1), d = X.shape(1), m = Y.shape(0);
  if (X.shape(0) != n || out.shape(0) != n || out.shape(1) != c || (m && Y.shape(1) != d))
    throw std::invalid_argument("rescore: shapes do not match");
  const int64_t* ix = idx.data();
  for (int64_t e = 0; e < n * c; ++e)
    if (ix[e] >= m) throw std::invalid_argument("rescore: index out of range");
  const float* x = X.data();
  const float* y = Y.data();
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  kernels().rescore(x, y, ix, o, n, c, d);
}

}  // namespace

PYBIND11_MODULE(_csls_cpu, m) {
  m.doc() = "Running top-k selection kernels (OpenMP) for xlfast.kernels.csls";
  m.def(
      "rows_update",
      [](py::array S, int64_t i0, int64_t j0, F32 vals, I64 idx, int mode, F32 rterm, F32 cterm, bool exclude_self,
         float margin_eps) {
        update(S, i0, j0, vals, idx, empty_f(), empty_i(), mode, rterm, cterm, exclude_self, margin_eps);
      },
      py::arg("S"), py::arg("i0"), py::arg("j0"), py::arg("vals").noconvert(), py::arg("idx").noconvert(),
      py::arg("mode"), py::arg("rterm"), py::arg("cterm"), py::arg("exclude_self"), py::arg("margin_eps"));
  m.def(
      "cols_update",
      [](py::array S, int64_t i0, int64_t j0, F32 vals, I64 idx, int mode, F32 rterm, F32 cterm, bool exclude_self,
         float margin_eps) {
        update(S, i0, j0, empty_f(), empty_i(), vals, idx, mode, rterm, cterm, exclude_self, margin_eps);
      },
      py::arg("S"), py::arg("i0"), py::arg("j0"), py::arg("vals").noconvert(), py::arg("idx").noconvert(),
      py::arg("mode"), py::arg("rterm"), py::arg("cterm"), py::arg("exclude_self"), py::arg("margin_eps"));
  m.def("fused_update", &update, "rows and columns from one read of the tile", py::arg("S"), py::arg("i0"),
        py::arg("j0"), py::arg("rvals").noconvert(), py::arg("ridx").noconvert(), py::arg("cvals").noconvert(),
        py::arg("cidx").noconvert(), py::arg("mode"), py::arg("rterm"), py::arg("cterm"), py::arg("exclude_self"),
        py::arg("margin_eps"), py::arg("stripes") = 0);
  m.def("rescore", &rescore, "out[r, c] = X[r] · Y[idx[r, c]] (float64 accumulation; −inf where idx < 0)",
        py::arg("X"), py::arg("Y"), py::arg("idx"), py::arg("out").noconvert());
  m.def("num_threads", &n_threads);
  m.def("simd_path", [] { return std::string(isa_name(kernels().isa)); },
        "the instruction-set variant of the kernels this CPU runs: avx512f, avx2 or generic");
  m.def("simd_paths", &compiled_isas, "the instruction-set variants compiled into this module");
}
