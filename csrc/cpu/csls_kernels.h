// The selection kernels of csls.cpp, included once per instruction set by multi_isa.h (inside a namespace:
// no #include here; csls.cpp includes what they use). mode is a template parameter with the values of
// xlfast.kernels.csls.base.Mode: 0 cos, 1 csls (2s − r_T[i] − r_S[j]), 2 margin (2s / max(r_T[i] + r_S[j], eps)).
// Values descending; ties keep the earlier index.

inline float load(const float* p) { return *p; }
inline float load(const uint16_t* p) {  // bfloat16 → float32 is exact: the high half of the bits
  const uint32_t u = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <int MODE>
inline float score(float s, float a, float b, float eps) {
  if (MODE == 1) return 2.0f * s - a - b;
  if (MODE == 2) return 2.0f * s / std::max(a + b, eps);
  return s;
}

// Which of the CH elements at row[0..CH) beat their threshold (bit u set: the score of element u exceeds
// rthr or cthr[u]); the arithmetic is the same as score<MODE>, so the mask is exactly the scalar test.
#ifdef XL_AVX512
inline __m512 vload(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 vload(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
template <int MODE, typename T, bool COLS>
inline uint32_t chunk_hits(const T* row, float a, const float* ct, float rthr, const float* cthr, float eps) {
  __m512 s = vload(row);
  if (MODE) {
    const __m512 b = _mm512_loadu_ps(ct), av = _mm512_set1_ps(a), two_s = _mm512_add_ps(s, s);
    if (MODE == 1)
      s = _mm512_sub_ps(_mm512_sub_ps(two_s, av), b);
    else
      s = _mm512_div_ps(two_s, _mm512_max_ps(_mm512_add_ps(av, b), _mm512_set1_ps(eps)));
  }
  uint32_t m = _mm512_cmp_ps_mask(s, _mm512_set1_ps(rthr), _CMP_GT_OQ);
  if (COLS) m |= _mm512_cmp_ps_mask(s, _mm512_loadu_ps(cthr), _CMP_GT_OQ);
  return m;
}
#else
template <int MODE, typename T, bool COLS>
inline uint32_t chunk_hits(const T* row, float a, const float* ct, float rthr, const float* cthr, float eps) {
  uint32_t m = 0;
  for (int u = 0; u < CH; ++u) {
    const float s = score<MODE>(load(row + u), a, MODE ? ct[u] : 0.0f, eps);
    m |= static_cast<uint32_t>((s > rthr) | (COLS && s > cthr[u])) << u;
  }
  return m;
}
#endif

template <int MODE, typename T>
void rows_kernel(const T* S, int64_t nb, int64_t mb, int64_t i0, int64_t j0, float* vals, int64_t* idx, int64_t k,
                 const float* rterm, const float* cterm, bool exclude_self, float eps) {
  const float* ct = cterm + j0;
#pragma omp parallel for schedule(static)
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t i = i0 + bi;
    float* v = vals + i * k;
    int64_t* ix = idx + i * k;
    float thr = v[k - 1];
    const T* row = S + bi * mb;
    const float a = MODE ? rterm[i] : 0.0f;
    int64_t bj = 0;
    for (; bj + CH <= mb; bj += CH) {
      uint32_t hits = chunk_hits<MODE, T, false>(row + bj, a, ct + bj, thr, nullptr, eps);
      while (hits) {  // only the flagged elements; the threshold may have risen meanwhile
        const int u = __builtin_ctz(hits);
        hits &= hits - 1;
        const float s = score<MODE>(load(row + bj + u), a, MODE ? ct[bj + u] : 0.0f, eps);
        const int64_t j = j0 + bj + u;
        if (s > thr && !(exclude_self && j == i)) {
          topk_insert(v, ix, k, s, j);
          thr = v[k - 1];
        }
      }
    }
    for (; bj < mb; ++bj) {
      const float s = score<MODE>(load(row + bj), a, MODE ? ct[bj] : 0.0f, eps);
      const int64_t j = j0 + bj;
      if (s > thr && !(exclude_self && j == i)) {
        topk_insert(v, ix, k, s, j);
        thr = v[k - 1];
      }
    }
  }
}

// top-k of two descending lists, the first holding the earlier indices (it wins ties)
inline void merge_into(float* v, int64_t* ix, const float* w, const int64_t* jx, int64_t k, float* tv, int64_t* tx) {
  int64_t a = 0, b = 0;
  for (int64_t c = 0; c < k; ++c) {
    if (w[b] > v[a]) {
      tv[c] = w[b];
      tx[c] = jx[b++];
    } else {
      tv[c] = v[a];
      tx[c] = ix[a++];
    }
  }
  std::copy(tv, tv + k, v);
  std::copy(tx, tx + k, ix);
}

template <int MODE, typename T, bool ROWS, bool COLS>
void fused_kernel(const T* S, int64_t nb, int64_t mb, int64_t i0, int64_t j0, float* rvals, int64_t* ridx,
                  int64_t kr, float* cvals, int64_t* cidx, int64_t kc, const float* rterm, const float* cterm,
                  bool exclude_self, float eps, int64_t want_stripes) {
  const int64_t nt = want_stripes > 0 ? want_stripes : n_threads();
  // one stripe per thread: each walks long contiguous row segments (more, narrower stripes measured
  // slower: 13.9 vs 8.7 ms per warm 2048×16384 tile at one thread)
  const int64_t n_stripes = want_stripes > 0 ? std::min(want_stripes, mb)
                                             : std::min<int64_t>(std::max<int64_t>(1, (mb + 63) / 64), nt);
  const int64_t stripe = (mb + n_stripes - 1) / n_stripes;
  std::vector<float> pv(ROWS ? n_stripes * nb * kr : 0, -kInf);
  std::vector<int64_t> px(ROWS ? n_stripes * nb * kr : 0, -1);
  const float* ct_all = cterm + j0;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_stripes; ++t) {
    const int64_t lo = t * stripe, hi = std::min(mb, lo + stripe);
    if (lo >= hi) continue;
    std::vector<float> cthr(hi - lo, kInf);
    if (COLS)
      for (int64_t bj = lo; bj < hi; ++bj) cthr[bj - lo] = cvals[(j0 + bj) * kc + kc - 1];
    const float* ct = ct_all + lo;
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t i = i0 + bi;
      const T* row = S + bi * mb + lo;
      const float a = MODE ? rterm[i] : 0.0f;
      float* v = ROWS ? pv.data() + (t * nb + bi) * kr : nullptr;
      int64_t* ix = ROWS ? px.data() + (t * nb + bi) * kr : nullptr;
      const float gthr = ROWS ? rvals[i * kr + kr - 1] : kInf;
      float rthr = ROWS ? std::max(gthr, v[kr - 1]) : kInf;
      const int64_t w = hi - lo;
      auto visit = [&](int64_t bj) {
        const float s = score<MODE>(load(row + bj), a, MODE ? ct[bj] : 0.0f, eps);
        const bool in_row = ROWS && s > rthr, in_col = COLS && s > cthr[bj];
        if (!(in_row || in_col)) return;
        const int64_t j = j0 + lo + bj;
        if (exclude_self && j == i) return;
        if (in_row) {
          topk_insert(v, ix, kr, s, j);
          rthr = std::max(gthr, v[kr - 1]);
        }
        if (in_col) {
          float* cv = cvals + j * kc;
          topk_insert(cv, cidx + j * kc, kc, s, i);
          cthr[bj] = cv[kc - 1];
        }
      };
      int64_t bj = 0;
      for (; bj + CH <= w; bj += CH) {
        uint32_t hits = chunk_hits<MODE, T, COLS>(row + bj, a, ct + bj, rthr, cthr.data() + bj, eps);
        while (hits) {
          const int u = __builtin_ctz(hits);
          hits &= hits - 1;
          visit(bj + u);
        }
      }
      for (; bj < w; ++bj) visit(bj);
    }
  }
  if (ROWS) {
#pragma omp parallel
    {
      std::vector<float> tv(kr);
      std::vector<int64_t> tx(kr);
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < nb; ++bi) {
        const int64_t i = i0 + bi;
        for (int64_t t = 0; t < n_stripes; ++t) {
          const float* w = pv.data() + (t * nb + bi) * kr;
          if (w[0] == -kInf) continue;  // nothing from this stripe beat the row's k-th best
          merge_into(rvals + i * kr, ridx + i * kr, w, px.data() + (t * nb + bi) * kr, kr, tv.data(), tx.data());
        }
      }
    }
  }
}

// One tile into the row buffers r and/or the column buffers c (at least one of them non-empty).
template <typename T>
void select_tile(const T* s, int64_t nb, int64_t mb, int64_t i0, int64_t j0, Buffers r, Buffers c, int mode,
                 const float* rt, const float* ct, bool exclude_self, float eps, int64_t stripes) {
  const bool rows = r.k > 0 && r.rows > 0, cols = c.k > 0 && c.rows > 0;
#define XL_CALL(M)                                                                                             \
  if (rows && cols)                                                                                            \
    fused_kernel<M, T, true, true>(s, nb, mb, i0, j0, r.v, r.ix, r.k, c.v, c.ix, c.k, rt, ct, exclude_self, eps, \
                                   stripes);                                                                   \
  else if (rows)                                                                                               \
    rows_kernel<M, T>(s, nb, mb, i0, j0, r.v, r.ix, r.k, rt, ct, exclude_self, eps);                           \
  else                                                                                                         \
    fused_kernel<M, T, false, true>(s, nb, mb, i0, j0, r.v, r.ix, 1, c.v, c.ix, c.k, rt, ct, exclude_self, eps,  \
                                    stripes);
  if (mode == 0) {
    XL_CALL(0)
  } else if (mode == 1) {
    XL_CALL(1)
  } else {
    XL_CALL(2)
  }
#undef XL_CALL
}

// out[r, c] = X[r] · Y[idx[r, c]] in float32 inputs / float64 accumulation (−inf where idx < 0).
inline void rescore_kernel(const float* x, const float* y, const int64_t* ix, float* o, int64_t n, int64_t c,
                           int64_t d) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    for (int64_t q = 0; q < c; ++q) {
      const int64_t j = ix[r * c + q];
      if (j < 0) {
        o[r * c + q] = -kInf;
        continue;
      }
      const float* yr = y + j * d;
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(xr[t]) * static_cast<double>(yr[t]);
      o[r * c + q] = static_cast<float>(acc);
    }
  }
}
