// The kernels of subword_embed.cpp, included once per instruction set by multi_isa.h (inside a namespace:
// no #include here; subword_embed.cpp includes what they use).

template <typename T, int64_t B>
inline void sum_block(const T* z, int64_t d, const index_t* pcs, index_t start, index_t stop, int64_t j0, T* r) {
  const T* z0 = z + pcs[start] * d + j0;
#pragma omp simd
  for (int64_t jj = 0; jj < B; ++jj) r[jj] = z0[jj];
  for (index_t k = start + 1; k < stop; ++k) {
    const T* zk = z + pcs[k] * d + j0;
#pragma omp simd
    for (int64_t jj = 0; jj < B; ++jj) r[jj] += zk[jj];
  }
}

template <typename T>
inline void sum_tail(const T* z, int64_t d, const index_t* pcs, index_t start, index_t stop, int64_t j0, int64_t m,
                     T* r) {
  const T* z0 = z + pcs[start] * d + j0;
  for (int64_t jj = 0; jj < m; ++jj) r[jj] = z0[jj];
  for (index_t k = start + 1; k < stop; ++k) {
    const T* zk = z + pcs[k] * d + j0;
    for (int64_t jj = 0; jj < m; ++jj) r[jj] += zk[jj];
  }
}

template <typename T>
void forward(const T* e, const T* z, const index_t* off, const index_t* pcs, const index_t* row, T* o, int64_t n,
             int64_t d) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const index_t w = row[i], start = off[w], stop = off[w + 1];
    const T inv = T(1) / T(stop - start);
    const T* ew = e + w * d;
    T* dst = o + i * d;
    // Column blocks small enough to live in registers: each piece row is read once and the sum
    // never round-trips through memory (a row-at-a-time sum was 2x slower here).
    for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
      const int64_t m = std::min<int64_t>(kBlock, d - j0);
      T r[kBlock];
      if (m == kBlock) {
        sum_block<T, kBlock>(z, d, pcs, start, stop, j0, r);
      } else {
        sum_tail<T>(z, d, pcs, start, stop, j0, m, r);
      }
#pragma omp simd
      for (int64_t jj = 0; jj < m; ++jj) dst[j0 + jj] = ew[j0 + jj] + r[jj] * inv;
    }
  }
}

// Each thread owns a contiguous range of piece rows and walks every word in order: no atomics.
// (Splitting columns instead, so that a P x block slice of grad_Z stays in L2, was measured 1.4-2x
// slower here: strided gradient reads and one pass over the CSR per block.)
template <typename T>
void grad_pieces(const T* gp, const index_t* off, const index_t* pcs, const index_t* row, T* gz, int64_t n, int64_t P,
                 int64_t d) {
#pragma omp parallel
  {
    int parts = 1, t = 0;
#ifdef _OPENMP
    parts = omp_get_num_threads();
    t = omp_get_thread_num();
#endif
    const int64_t lo = P * t / parts, hi = P * (t + 1) / parts;
    std::fill(gz + lo * d, gz + hi * d, T(0));
    for (int64_t i = 0; i < n; ++i) {
      const index_t w = row[i], start = off[w], stop = off[w + 1];
      const T inv = T(1) / T(stop - start);
      const T* gi = gp + i * d;
      for (index_t k = start; k < stop; ++k) {
        const index_t p = pcs[k];
        if (p < lo || p >= hi) continue;
        T* dst = gz + p * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) dst[j] += gi[j] * inv;
      }
    }
  }
}
