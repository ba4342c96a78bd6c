// The row pass of the fused linear cross-entropy on the CPU: for each row of a chunk of logits (the
// GEMMs around it run in BLAS), the fp32 log-sum-exp, the row's loss, and — in place — the gradient of
// the loss with respect to the logits, softmax(x) - onehot(target).
//
// Why C++ beside Numba: the exponential. Numba has no vector exp here (no SVML), so every element costs
// a scalar libm call; here it is a polynomial on 8-float vectors (AVX2/FMA). One row is read three times
// (max, exp-and-sum, scale), all from L2: a 20k-word row is 80 KB.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

// GCC/Clang vector extensions: 8 floats, AVX2 registers with -march=native on x86 (two SSE halves
// elsewhere). Written out because GCC left the reductions of a plain `omp simd` loop scalar here (read
// in the disassembly: 2.5x slower than torch's softmax).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int64_t L = 8;
constexpr int64_t kBlock = 32 * L;  // elements summed in float lanes before a double accumulation

static inline v8f splat(float x) { return v8f{} + x; }
static inline v8f load(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
static inline void store(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }

// exp(x) for x <= 0 (row values minus the row maximum): Cephes' expf polynomial, ~1 ulp. Below -87 the
// result is clamped to ~1.6e-38, which changes no sum of at least 1 (the maximum's own term).
template <typename F, typename I>
static inline F exp_nonpositive(F x) {
  const F lo = x * 0 - 87.0f;
  x = x < lo ? lo : x;
  const F magic = x * 0 + 12582912.0f;                   // 1.5 * 2^23: adding it rounds to an integer
  const F n = (x * 1.44269504088896341f + magic) - magic;  // round(x / ln 2)
  const F r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2, ln2 split in two for exactness
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  I bits;
  if constexpr (std::is_same_v<F, float>) {
    bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  } else {
    bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  }
  F scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

static inline float hmax(v8f v) {
  float m = v[0];
  for (int k = 1; k < L; ++k) m = std::max(m, v[k]);
  return m;
}
static inline double hsum(v8f v) {
  double s = 0.0;
  for (int k = 0; k < L; ++k) s += v[k];
  return s;
}

// One row x (length V, modified in place): returns logsumexp(x + bias) - (x + bias)[t]; with `grad`, x
// becomes softmax(x + bias) - onehot(t). Three sweeps (max, exp-and-sum, scale), all from L2.
static float row_pass(float* row, const float* bias, int64_t V, int64_t t, bool grad) {
  const int64_t Vv = V - V % L;
  v8f vm = splat(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < Vv; j += L) {
    v8f x = load(row + j);
    if (bias) {
      x += load(bias + j);
      store(row + j, x);
    }
    vm = x > vm ? x : vm;
  }
  float m = hmax(vm);
  for (int64_t j = Vv; j < V; ++j) {
    if (bias) row[j] += bias[j];
    m = std::max(m, row[j]);
  }
  const float picked = row[t];
  // float lanes within a block, a double across blocks: a float sum of 20k terms loses ~1e-5 of it
  double s = 0.0;
  const v8f vmax = splat(m);
  for (int64_t b = 0; b < Vv; b += kBlock) {
    const int64_t stop = std::min(b + kBlock, Vv);
    v8f acc = v8f{};
    for (int64_t j = b; j < stop; j += L) {
      const v8f e = exp_nonpositive<v8f, v8i>(load(row + j) - vmax);
      if (grad) store(row + j, e);
      acc += e;
    }
    s += hsum(acc);
  }
  for (int64_t j = Vv; j < V; ++j) {
    const float e = exp_nonpositive<float, int32_t>(row[j] - m);
    if (grad) row[j] = e;
    s += e;
  }
  if (grad) {
    const float inv = static_cast<float>(1.0 / s);
    const v8f vinv = splat(inv);
    for (int64_t j = 0; j < Vv; j += L) store(row + j, load(row + j) * vinv);
    for (int64_t j = Vv; j < V; ++j) row[j] *= inv;
    row[t] -= 1.0f;
  }
  return static_cast<float>(m + std::log(s)) - picked;
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
  for (int64_t r = 0; r < C; ++r) out[r] = row_pass(x + r * V, bias, V, tgt[r], grad);
}

PYBIND11_MODULE(_linear_ce_cpu, m) {
  m.doc() = "Row pass of the fused linear cross-entropy (fp32 log-sum-exp, in-place logit gradient)";
  m.def("rows_", &rows_, py::arg("logits"), py::arg("target"), py::arg("bias"), py::arg("loss"), py::arg("grad"),
        py::arg("threads"));
}
