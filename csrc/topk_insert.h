// The one insertion step of every running top-k in csrc (CPU and CUDA): put s (index j) into the descending
// list v/ix of length k, whose last entry it beats; equal values stay in front (ties keep the earlier index).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define XL_HOST_DEVICE __host__ __device__
#else
#define XL_HOST_DEVICE
#endif

template <typename Index>
XL_HOST_DEVICE inline void topk_insert(float* v, int64_t* ix, Index k, float s, int64_t j) {
  Index p = k - 1;
  while (p > 0 && v[p - 1] < s) {
    v[p] = v[p - 1];
    ix[p] = ix[p - 1];
    --p;
  }
  v[p] = s;
  ix[p] = j;
}
