// The kernels of subword_embed.cpp, included once per instruction set by multi_isa.h (inside a namespace:
// no system #include here; subword_embed.cpp includes what they use).

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

// The dropout mask of `dropout_keep` (xlfast/kernels/subword_embed/base.py): element `index` of a table
// is kept iff mix32(index ^ key) >= threshold (index mod 2**32), in uint32 arithmetic so that it vectorises.
inline uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  return h ^ (h >> 16);
}

// v where keep, +0 elsewhere, as a bit mask: a branch or `keep ? v : 0` is not vectorised (GCC will not
// if-convert floating-point code under its default -ftrapping-math), and the masks are random.
template <typename T>
inline T keep_or_zero(T v, bool keep) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U u;
  std::memcpy(&u, &v, sizeof u);
  u &= U(0) - U(keep);
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// A mask ready for one element type: `apply` gives x * scale where element `index` is kept, else 0.
template <typename T>
struct Mask {
  uint32_t key, threshold;
  T scale;
  explicit Mask(const DropArgs& a) : key(a.key), threshold(a.threshold), scale(T(a.scale)) {}
  inline T apply(uint32_t index, T x) const { return keep_or_zero(x * scale, mix32(index ^ key) >= threshold); }
};

template <typename T>
void dropout(const T* x, int64_t rows, int64_t d, DropArgs drop, T* out) {
  const Mask<T> mask(drop);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t base = uint32_t(uint64_t(r) * uint64_t(d));
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) out[r * d + j] = mask.apply(base + uint32_t(j), x[r * d + j]);
  }
}

#include "bf16.h"

// The same mask on bf16 values (their bits): widened, scaled and rounded back as torch rounds (bf16
// activations under autocast; exact for p = 0.5, whose scale is 2).
inline void dropout_bf16(const uint16_t* x, int64_t rows, int64_t d, DropArgs drop, uint16_t* out) {
  const Mask<float> mask(drop);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t base = uint32_t(uint64_t(r) * uint64_t(d));
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) out[r * d + j] = to_bf16(mask.apply(base + uint32_t(j), from_bf16(x[r * d + j])));
  }
}

// One output element: E[w, j] (under the word-table mask, element w*d + j of E) plus the mean of the
// pieces, under the output mask (element i*d + j of out).
template <typename T, bool WordDrop, bool OutDrop>
struct Finish {
  Mask<T> words, outs;
  uint32_t word_base, out_base;
  inline T operator()(int64_t j, T e, T mean) const {
    if (WordDrop) e = words.apply(word_base + uint32_t(j), e);
    const T x = e + mean;
    return OutDrop ? outs.apply(out_base + uint32_t(j), x) : x;
  }
};

// The forward, with the masks applied while each row is written, so that neither costs a pass of its own.
// Words of 1-3 pieces (nearly all) stream their piece rows in one loop over the row, as the Numba kernel
// does (column blocks for every word took 1.24x its CPU time, V=50k, d=500, one thread); longer words sum in
// column blocks small enough to live in registers, so that each piece row is read once and the sum never
// round-trips through memory (a row-at-a-time sum was 2x slower here).
template <typename T, bool WordDrop, bool OutDrop>
void forward_masked(const T* e, const T* z, const index_t* off, const index_t* pcs, const index_t* row, T* o,
                    int64_t n, int64_t d, DropArgs word_drop, DropArgs out_drop) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const index_t w = row[i], start = off[w], stop = off[w + 1];
    const T inv = T(1) / T(stop - start);
    const T* ew = e + w * d;
    T* dst = o + i * d;
    const Finish<T, WordDrop, OutDrop> fin{Mask<T>(word_drop), Mask<T>(out_drop), uint32_t(uint64_t(w) * uint64_t(d)),
                                           uint32_t(uint64_t(i) * uint64_t(d))};
    const T* z0 = z + pcs[start] * d;
    if (stop - start == 1) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] = fin(j, ew[j], z0[j]);
    } else if (stop - start == 2) {
      const T* z1 = z + pcs[start + 1] * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] = fin(j, ew[j], (z0[j] + z1[j]) * inv);
    } else if (stop - start == 3) {
      const T *z1 = z + pcs[start + 1] * d, *z2 = z + pcs[start + 2] * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] = fin(j, ew[j], (z0[j] + z1[j] + z2[j]) * inv);
    } else {
      for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
        const int64_t m = std::min<int64_t>(kBlock, d - j0);
        T r[kBlock];
        if (m == kBlock) {
          sum_block<T, kBlock>(z, d, pcs, start, stop, j0, r);
        } else {
          sum_tail<T>(z, d, pcs, start, stop, j0, m, r);
        }
#pragma omp simd
        for (int64_t jj = 0; jj < m; ++jj) dst[j0 + jj] = fin(j0 + jj, ew[j0 + jj], r[jj] * inv);
      }
    }
  }
}

template <typename T>
void forward(const T* e, const T* z, const index_t* off, const index_t* pcs, const index_t* row, T* o, int64_t n,
             int64_t d, DropArgs words, DropArgs outs) {
  if (words.on && outs.on) return forward_masked<T, true, true>(e, z, off, pcs, row, o, n, d, words, outs);
  if (words.on) return forward_masked<T, true, false>(e, z, off, pcs, row, o, n, d, words, outs);
  if (outs.on) return forward_masked<T, false, true>(e, z, off, pcs, row, o, n, d, words, outs);
  forward_masked<T, false, false>(e, z, off, pcs, row, o, n, d, words, outs);
}

// Each thread owns a contiguous range of piece rows and walks every word in order: no atomics.
// (Splitting columns instead, so that a P x block slice of grad_Z stays in L2, was measured 1.4-2x
// slower here: strided gradient reads and one pass over the CSR per block.) The heads of the piece rows
// the next word will update are fetched while this one's are: they are random rows of a table that need
// not stay in cache, and the hardware's stream prefetcher follows a row once it has started (V=50k, d=500,
// one thread: 13% off the median at P=8k, nothing lost at P=1k where the table stays in cache; fetching
// whole rows cost 20% there, and the same hint in the forward, for the rows it reads, cost more than it saved).
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
      if (i + 1 < n) {
        const index_t next = row[i + 1];
        const int64_t head = std::min<int64_t>(kPrefetchBytes, d * int64_t(sizeof(T)));
        for (index_t k = off[next]; k < off[next + 1]; ++k) {
          if (pcs[k] < lo || pcs[k] >= hi) continue;
          const char* line = reinterpret_cast<const char*>(gz + pcs[k] * d);
          for (int64_t b = 0; b < head; b += 64) __builtin_prefetch(line + b, 1, 3);
        }
      }
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
