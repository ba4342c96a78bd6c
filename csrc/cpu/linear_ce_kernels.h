// The row pass of the fused linear cross-entropy, included once per instruction set by multi_isa.h
// (see linear_ce.cpp): everything here lands in the namespace generic, avx2 or avx512.

// GCC/Clang vector extensions: 8 floats, one AVX2 register in the avx2 and avx512 variants (two SSE
// halves in the generic one). Written out because GCC left the reductions of a plain `omp simd` loop
// scalar here (read in the disassembly: 2.5x slower than torch's softmax).
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

#include "bf16.h"

// Every row of a [C, V] chunk in float32, in place.
static void rows_f32(float* x, const float* bias, const int64_t* tgt, float* out, int64_t C, int64_t V, bool grad,
                     int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < C; ++r) out[r] = row_pass(x + r * V, bias, V, tgt[r], grad);
}

// The same on bf16 logits (the bf16 GEMMs' output), each row widened into a float scratch row (in L2),
// its gradient rounded back in place: no float copy of the chunk.
static void rows_bf16(uint16_t* x, const float* bias, const int64_t* tgt, float* out, int64_t C, int64_t V,
                      bool grad, int threads) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(static_cast<size_t>(V));
    float* s = scratch.data();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < C; ++r) {
      uint16_t* row = x + r * V;
      for (int64_t j = 0; j < V; ++j) s[j] = from_bf16(row[j]);
      out[r] = row_pass(s, bias, V, tgt[r], grad);
      if (grad)
        for (int64_t j = 0; j < V; ++j) row[j] = to_bf16(s[j]);
    }
  }
}
