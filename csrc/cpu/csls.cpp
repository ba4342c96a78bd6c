// Running top-k selection over one similarity tile, for xlfast.kernels.csls (built as xlfast._csls_cpu).
//
// The tile S = X_blk · Y_blkᵀ comes from OpenBLAS through numpy; these kernels only select.
// rows_update: per row of the tile (OpenMP over rows) keep the k best scores seen so far.
// cols_update: per column (OpenMP over wide column stripes, each walking the rows so reads stay
//              contiguous) keep the k best. An element costs one compare against the current k-th
//              best unless it beats it. mode: 0 cos, 1 csls (2s − r_T[i] − r_S[j]), 2 margin
//              (2s / max(r_T[i] + r_S[j], 1e-6)). Values descending; ties keep the earlier index.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

namespace {

constexpr float kMarginEps = 1e-6f;

inline float score(float s, int mode, float a, float b) {
  if (mode == 1) return 2.0f * s - a - b;
  if (mode == 2) return 2.0f * s / std::max(a + b, kMarginEps);
  return s;
}

inline void insert(float* v, int64_t* ix, int64_t k, float s, int64_t j) {
  int64_t p = k - 1;
  while (p > 0 && v[p - 1] < s) {
    v[p] = v[p - 1];
    ix[p] = ix[p - 1];
    --p;
  }
  v[p] = s;
  ix[p] = j;
}

int n_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <int MODE>
void rows_kernel(const float* S, int64_t nb, int64_t mb, int64_t i0, int64_t j0, float* vals, int64_t* idx,
                 int64_t k, const float* rterm, const float* cterm, bool exclude_self) {
#pragma omp parallel for schedule(static)
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t i = i0 + bi;
    float* v = vals + i * k;
    int64_t* ix = idx + i * k;
    float thr = v[k - 1];
    const float* row = S + bi * mb;
    const float a = MODE ? rterm[i] : 0.0f;
    for (int64_t bj = 0; bj < mb; ++bj) {
      const float s = MODE ? score(row[bj], MODE, a, cterm[j0 + bj]) : row[bj];
      if (s > thr) {
        const int64_t j = j0 + bj;
        if (exclude_self && j == i) continue;
        insert(v, ix, k, s, j);
        thr = v[k - 1];
      }
    }
  }
}

template <int MODE>
void cols_kernel(const float* S, int64_t nb, int64_t mb, int64_t i0, int64_t j0, float* vals, int64_t* idx,
                 int64_t k, const float* rterm, const float* cterm, bool exclude_self) {
  const int64_t n_stripes = std::max<int64_t>(1, std::min<int64_t>((mb + 63) / 64, 4 * n_threads()));
  const int64_t stripe = (mb + n_stripes - 1) / n_stripes;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_stripes; ++t) {
    const int64_t lo = t * stripe, hi = std::min(mb, lo + stripe);
    if (lo >= hi) continue;
    std::vector<float> thr(hi - lo);
    for (int64_t bj = lo; bj < hi; ++bj) thr[bj - lo] = vals[(j0 + bj) * k + k - 1];
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t i = i0 + bi;
      const float* row = S + bi * mb;
      const float a = MODE ? rterm[i] : 0.0f;
      for (int64_t bj = lo; bj < hi; ++bj) {
        const float s = MODE ? score(row[bj], MODE, a, cterm[j0 + bj]) : row[bj];
        if (s > thr[bj - lo]) {
          const int64_t j = j0 + bj;
          if (exclude_self && j == i) continue;
          float* v = vals + j * k;
          insert(v, idx + j * k, k, s, i);
          thr[bj - lo] = v[k - 1];
        }
      }
    }
  }
}

using Kernel = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, float*, int64_t*, int64_t, const float*,
                        const float*, bool);

void run(Kernel kernels[3], F32 S, int64_t i0, int64_t j0, F32 vals, I64 idx, int mode, F32 rterm, F32 cterm,
         bool exclude_self, bool by_rows) {
  if (S.ndim() != 2 || vals.ndim() != 2 || idx.ndim() != 2) throw std::invalid_argument("expected 2-D arrays");
  if (mode < 0 || mode > 2) throw std::invalid_argument("mode must be 0, 1 or 2");
  const int64_t nb = S.shape(0), mb = S.shape(1), k = vals.shape(1);
  const int64_t first = by_rows ? i0 : j0, count = by_rows ? nb : mb;
  if (k == 0 || count == 0) return;
  if (idx.shape(0) != vals.shape(0) || idx.shape(1) != k || first + count > vals.shape(0))
    throw std::invalid_argument("top-k buffers do not match the tile");
  if (mode && (rterm.size() < i0 + nb || cterm.size() < j0 + mb))
    throw std::invalid_argument("neighbourhood means are shorter than the tile");
  const float* s = S.data();
  float* v = vals.mutable_data();
  int64_t* ix = idx.mutable_data();
  const float* rt = rterm.data();
  const float* ct = cterm.data();
  py::gil_scoped_release release;
  kernels[mode](s, nb, mb, i0, j0, v, ix, k, rt, ct, exclude_self);
}

}  // namespace

PYBIND11_MODULE(_csls_cpu, m) {
  m.doc() = "Running top-k selection kernels (OpenMP) for xlfast.kernels.csls";
  m.def(
      "rows_update",
      [](F32 S, int64_t i0, int64_t j0, F32 vals, I64 idx, int mode, F32 rterm, F32 cterm, bool exclude_self) {
        static Kernel ks[3] = {rows_kernel<0>, rows_kernel<1>, rows_kernel<2>};
        run(ks, S, i0, j0, vals, idx, mode, rterm, cterm, exclude_self, true);
      },
      py::arg("S"), py::arg("i0"), py::arg("j0"), py::arg("vals").noconvert(), py::arg("idx").noconvert(),
      py::arg("mode"), py::arg("rterm"), py::arg("cterm"), py::arg("exclude_self"));
  m.def(
      "cols_update",
      [](F32 S, int64_t i0, int64_t j0, F32 vals, I64 idx, int mode, F32 rterm, F32 cterm, bool exclude_self) {
        static Kernel ks[3] = {cols_kernel<0>, cols_kernel<1>, cols_kernel<2>};
        run(ks, S, i0, j0, vals, idx, mode, rterm, cterm, exclude_self, false);
      },
      py::arg("S"), py::arg("i0"), py::arg("j0"), py::arg("vals").noconvert(), py::arg("idx").noconvert(),
      py::arg("mode"), py::arg("rterm"), py::arg("cterm"), py::arg("exclude_self"));
  m.def("num_threads", &n_threads);
}
