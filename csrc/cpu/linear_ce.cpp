// The row pass of the fused linear cross-entropy on the CPU: for each row of a chunk of logits (the
// GEMMs around it run in BLAS), the fp32 log-sum-exp, the row's loss, and — in place — the gradient of
// the loss with respect to the logits, softmax(x) - onehot(target).
//
// Why C++ beside Numba: the exponential. Numba has no vector exp here (no SVML), so every element costs
// a scalar libm call; the polynomial below (Cephes' expf, ~1 ulp) is plain arithmetic that GCC vectorises
// with AVX2/FMA. One row is read three times (max, exp-and-sum, scale), all from L2: a 20k-word row is
// 80 KB.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

// exp(x) for x <= 0 (row values minus the row maximum). Below -87 the result is clamped to ~1.6e-38,
// which changes no sum of at least 1 (the maximum's own term).
static inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 shifts the fraction out)
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2, ln2 split in two for exactness
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Per row r: loss[r] = logsumexp(x_r + bias) - (x_r + bias)[target[r]]; with `grad`, x_r becomes
// softmax(x_r + bias) - onehot(target[r]). Targets must lie in [0, V) (ignored rows were removed before).
static void rows_(py::array_t<float, py::array::c_style> logits, py::array_t<int64_t, py::array::c_style> target,
                  py::object bias_obj, py::array_t<float, py::array::c_style> loss, bool grad, int threads) {
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
  float* x = logits.mutable_data();
  const int64_t* tgt = target.data();
  float* out = loss.mutable_data();
  for (int64_t r = 0; r < C; ++r)
    if (tgt[r] < 0 || tgt[r] >= V) throw std::out_of_range("target outside [0, V)");
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(std::max(threads, 1))
  for (int64_t r = 0; r < C; ++r) {
    float* row = x + r * V;
    float m = -std::numeric_limits<float>::infinity();
    if (bias) {
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < V; ++j) {
        row[j] += bias[j];
        m = std::max(m, row[j]);
      }
    } else {
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < V; ++j) m = std::max(m, row[j]);
    }
    const float picked = row[tgt[r]];
    double s = 0.0;  // 20k terms: a float sum loses ~1e-5 of the partition function, a double none
    if (grad) {
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < V; ++j) {
        const float e = exp_nonpositive(row[j] - m);
        row[j] = e;
        s += e;
      }
    } else {
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < V; ++j) s += exp_nonpositive(row[j] - m);
    }
    out[r] = (m + std::log(s)) - picked;
    if (grad) {
      const float inv = static_cast<float>(1.0 / s);
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) row[j] *= inv;
      row[tgt[r]] -= 1.0f;
    }
  }
}

PYBIND11_MODULE(_linear_ce_cpu, m) {
  m.doc() = "Row pass of the fused linear cross-entropy (fp32 log-sum-exp, in-place logit gradient)";
  m.def("rows_", &rows_, py::arg("logits"), py::arg("target"), py::arg("bias"), py::arg("loss"), py::arg("grad"),
        py::arg("threads"));
}
