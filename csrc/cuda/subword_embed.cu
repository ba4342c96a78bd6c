// Fused subword-average lookup on CUDA: out[i] = E[w] + mean_{p in pieces(w)} Z[p], w = rows[i], and
// the piece gradient grad_Z[p] += g[i] / count(w) (atomics: the piece table is small and L2-resident).
// Self-contained (no torch headers) so it compiles wherever nvcc is; the launchers take raw device
// pointers and a stream, for a thin binding.
#include <cuda_runtime.h>
#include <cstdint>

namespace {

// One block per output row; threads stride over the d columns, so reads of E, Z and writes of out
// are coalesced. The accumulation stays in a register per column.
template <typename T>
__global__ void subword_embed_forward_kernel(const T* __restrict__ E, const T* __restrict__ Z,
                                             const int64_t* __restrict__ offsets, const int64_t* __restrict__ pieces,
                                             const int64_t* __restrict__ rows, T* __restrict__ out, int64_t d) {
  const int64_t i = blockIdx.x;
  const int64_t w = rows[i];
  const int64_t start = offsets[w], stop = offsets[w + 1];
  const float inv = 1.0f / static_cast<float>(stop - start);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = start; k < stop; ++k) acc += static_cast<float>(Z[pieces[k] * d + j]);
    out[i * d + j] = static_cast<T>(static_cast<float>(E[w * d + j]) + acc * inv);
  }
}

template <typename T>
__global__ void subword_embed_grad_pieces_kernel(const T* __restrict__ g, const int64_t* __restrict__ offsets,
                                                 const int64_t* __restrict__ pieces,
                                                 const int64_t* __restrict__ rows, T* __restrict__ grad_Z, int64_t d) {
  const int64_t i = blockIdx.x;
  const int64_t w = rows[i];
  const int64_t start = offsets[w], stop = offsets[w + 1];
  const T inv = T(1) / static_cast<T>(stop - start);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const T share = g[i * d + j] * inv;
    for (int64_t k = start; k < stop; ++k) atomicAdd(grad_Z + pieces[k] * d + j, share);
  }
}

inline int threads_for(int64_t d) {
  int t = 32;
  while (t < d && t < 512) t *= 2;
  return t;
}

}  // namespace

extern "C" {

cudaError_t xlfast_subword_embed_forward_f32(const float* E, const float* Z, const int64_t* offsets,
                                             const int64_t* pieces, const int64_t* rows, float* out, int64_t n,
                                             int64_t d, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  subword_embed_forward_kernel<float><<<n, threads_for(d), 0, stream>>>(E, Z, offsets, pieces, rows, out, d);
  return cudaGetLastError();
}

// grad_Z must be zeroed by the caller (cudaMemsetAsync) before this call.
cudaError_t xlfast_subword_embed_grad_pieces_f32(const float* g, const int64_t* offsets, const int64_t* pieces,
                                                 const int64_t* rows, float* grad_Z, int64_t n, int64_t d,
                                                 cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  subword_embed_grad_pieces_kernel<float><<<n, threads_for(d), 0, stream>>>(g, offsets, pieces, rows, grad_Z, d);
  return cudaGetLastError();
}

}  // extern "C"
