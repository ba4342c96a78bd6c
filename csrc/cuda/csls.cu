// CUDA top-k cosine / CSLS / margin retrieval for xlfast.kernels.csls (compiled only where nvcc exists).
//
// One block per query row x_i: the row is staged in shared memory, each thread scans a strided subset
// of Y computing dot products, keeps a private running top-K (insertion only above its current K-th
// best), and the block then merges the per-thread lists in shared memory. Scores (mode: the int of
// xlfast.kernels.csls.base.Mode): 0 cos, 1 csls (2s − r_T[i] − r_S[j]), 2 margin (2s / max(r_T[i] + r_S[j],
// margin_eps)). No N×M buffer exists.
// Column statistics (r_S, reverse top-k) launch the same kernel with X and Y swapped.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "../topk_insert.h"

namespace {

constexpr int kThreads = 128;
constexpr int kMaxK = 32;

template <int K>
__global__ void topk_rows_kernel(const float* __restrict__ X, const float* __restrict__ Y, int64_t n, int64_t m,
                                 int d, int mode, const float* __restrict__ rterm, const float* __restrict__ cterm,
                                 float margin_eps, bool exclude_self, int k_out, float* __restrict__ out_v,
                                 int64_t* __restrict__ out_i) {
  extern __shared__ float xrow[];  // d floats, then kThreads*K candidate values
  const int64_t i = blockIdx.x;
  if (i >= n) return;
  for (int t = threadIdx.x; t < d; t += blockDim.x) xrow[t] = X[i * d + t];
  __syncthreads();

  float v[K];
  int64_t ix[K];
  for (int r = 0; r < K; ++r) {
    v[r] = -FLT_MAX;
    ix[r] = -1;
  }
  const float a = mode ? rterm[i] : 0.0f;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    if (exclude_self && j == i) continue;
    const float* y = Y + j * d;
    float s = 0.0f;
    for (int t = 0; t < d; ++t) s = fmaf(xrow[t], y[t], s);
    if (mode == 1) s = 2.0f * s - a - cterm[j];
    if (mode == 2) s = 2.0f * s / fmaxf(a + cterm[j], margin_eps);
    if (s > v[K - 1]) topk_insert(v, ix, K, s, j);
  }

  float* cand_v = xrow + d;
  int64_t* cand_i = reinterpret_cast<int64_t*>(cand_v + kThreads * K);
  __syncthreads();
  for (int r = 0; r < K; ++r) {
    cand_v[threadIdx.x * K + r] = v[r];
    cand_i[threadIdx.x * K + r] = ix[r];
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // merge the per-thread lists; ties keep the smaller index
    float best_v[K];
    int64_t best_i[K];
    for (int r = 0; r < K; ++r) {
      best_v[r] = -FLT_MAX;
      best_i[r] = -1;
    }
    for (int c = 0; c < kThreads * K; ++c) {
      const float s = cand_v[c];
      const int64_t j = cand_i[c];
      if (j < 0) continue;
      if (s > best_v[K - 1] || (s == best_v[K - 1] && j < best_i[K - 1] && best_i[K - 1] >= 0)) {
        int p = K - 1;
        while (p > 0 && (best_v[p - 1] < s || (best_v[p - 1] == s && best_i[p - 1] > j))) {
          best_v[p] = best_v[p - 1];
          best_i[p] = best_i[p - 1];
          --p;
        }
        best_v[p] = s;
        best_i[p] = j;
      }
    }
    for (int r = 0; r < k_out; ++r) {  // K is k rounded up to a compiled size
      out_v[i * k_out + r] = best_i[r] >= 0 ? best_v[r] : -INFINITY;
      out_i[i * k_out + r] = best_i[r];
    }
  }
}

template <int K>
cudaError_t launch_k(const float* X, const float* Y, int64_t n, int64_t m, int d, int mode, const float* rterm,
                     const float* cterm, float margin_eps, bool exclude_self, int k, float* out_v, int64_t* out_i,
                     cudaStream_t stream) {
  const size_t shared = d * sizeof(float) + kThreads * K * (sizeof(float) + sizeof(int64_t));
  topk_rows_kernel<K><<<static_cast<unsigned>(n), kThreads, shared, stream>>>(X, Y, n, m, d, mode, rterm, cterm,
                                                                            margin_eps, exclude_self, k, out_v, out_i);
  return cudaGetLastError();
}

}  // namespace

// Device pointers in, device pointers out ([n, k] values and indices). k ≤ 32 (the retrieval k of
// BLI/mining is ≤ 10); the buffers must hold exactly k columns.
extern "C" int xlfast_csls_topk_rows(const float* X, const float* Y, int64_t n, int64_t m, int d, int k, int mode,
                                     const float* rterm, const float* cterm, float margin_eps, int exclude_self,
                                     float* out_v, int64_t* out_i, void* stream) {
  if (n == 0 || k == 0) return 0;
  if (k > kMaxK || mode < 0 || mode > 2) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  cudaError_t err;
  if (k <= 1) err = launch_k<1>(X, Y, n, m, d, mode, rterm, cterm, margin_eps, exclude_self, k, out_v, out_i, s);
  else if (k <= 5) err = launch_k<5>(X, Y, n, m, d, mode, rterm, cterm, margin_eps, exclude_self, k, out_v, out_i, s);
  else if (k <= 10) err = launch_k<10>(X, Y, n, m, d, mode, rterm, cterm, margin_eps, exclude_self, k, out_v, out_i, s);
  else err = launch_k<32>(X, Y, n, m, d, mode, rterm, cterm, margin_eps, exclude_self, k, out_v, out_i, s);
  return static_cast<int>(err);
}
