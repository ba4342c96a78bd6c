// Fused subword-average lookup on the CPU: out[i] = E[w] + mean_{p in pieces(w)} Z[p], w = rows[i],
// optionally under the hashed dropout masks of the word table and of the output; the piece gradient
// grad_Z[p] = sum over uses of p of g[i] / count(w); and the hashed dropout of a table (kernels:
// subword_embed_kernels.h, compiled per instruction set by multi_isa.h).
// Why C++ beside Numba: explicit register blocking of the column sums and `omp simd` on the scatter of
// the backward. (Streaming stores for the output were tried and measured slower here: 40.5 vs 29.5 ms
// at V=50k, d=500, one thread, so rows are written directly.)
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using index_t = int64_t;
template <typename T>
using Array = py::array_t<T, py::array::c_style>;

namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kPrefetchBytes = 256;  // of each piece row the backward will update next

// A dropout mask (a drop spec of base.py: key, threshold, scale), or none when `on` is false.
struct DropArgs {
  bool on;
  uint32_t key, threshold;
  double scale;
};

#define XL_KERNELS "subword_embed_kernels.h"
#include "multi_isa.h"

const Isa kIsa = best_isa();

// A drop spec from Python, (key, threshold, scale) or None.
using DropSpec = std::optional<std::tuple<uint32_t, uint32_t, double>>;

DropArgs drop_of(const DropSpec& spec) {
  if (!spec) return DropArgs{false, 0, 0, 1.0};
  return DropArgs{true, std::get<0>(*spec), std::get<1>(*spec), std::get<2>(*spec)};
}

template <typename T>
void forward(Array<T> E, Array<T> Z, Array<index_t> offsets, Array<index_t> pieces, Array<index_t> rows, Array<T> out,
             const DropSpec& drop_words, const DropSpec& drop_out) {
  const int64_t n = out.shape(0), d = out.shape(1);
  const T* e = E.data();
  const T* z = Z.data();
  const index_t* off = offsets.data();
  const index_t* pcs = pieces.data();
  const index_t* row = rows.data();
  T* o = out.mutable_data();
  const DropArgs words = drop_of(drop_words), outs = drop_of(drop_out);
  py::gil_scoped_release release;
#if XL_MULTI_ISA
  if (kIsa == Isa::avx512) return avx512::forward<T>(e, z, off, pcs, row, o, n, d, words, outs);
  if (kIsa == Isa::avx2) return avx2::forward<T>(e, z, off, pcs, row, o, n, d, words, outs);
#endif
  generic::forward<T>(e, z, off, pcs, row, o, n, d, words, outs);
}

// out = X under the mask `drop`; out may be X (in place).
template <typename T>
void dropout(Array<T> X, const DropSpec& drop, Array<T> out) {
  const int64_t rows = X.shape(0), d = X.shape(1);
  const T* x = X.data();
  T* o = out.mutable_data();
  const DropArgs mask = drop_of(drop);
  py::gil_scoped_release release;
#if XL_MULTI_ISA
  if (kIsa == Isa::avx512) return avx512::dropout<T>(x, rows, d, mask, o);
  if (kIsa == Isa::avx2) return avx2::dropout<T>(x, rows, d, mask, o);
#endif
  generic::dropout<T>(x, rows, d, mask, o);
}

// The same on bf16 values, passed as their bits (numpy has no bf16).
void dropout_bf16(Array<int16_t> X, const DropSpec& drop, Array<int16_t> out) {
  const int64_t rows = X.shape(0), d = X.shape(1);
  const auto* x = reinterpret_cast<const uint16_t*>(X.data());
  auto* o = reinterpret_cast<uint16_t*>(out.mutable_data());
  const DropArgs mask = drop_of(drop);
  py::gil_scoped_release release;
#if XL_MULTI_ISA
  if (kIsa == Isa::avx512) return avx512::dropout_bf16(x, rows, d, mask, o);
  if (kIsa == Isa::avx2) return avx2::dropout_bf16(x, rows, d, mask, o);
#endif
  generic::dropout_bf16(x, rows, d, mask, o);
}

template <typename T>
void grad_pieces(Array<T> g, Array<index_t> offsets, Array<index_t> pieces, Array<index_t> rows, Array<T> grad_Z) {
  const int64_t n = g.shape(0), P = grad_Z.shape(0), d = grad_Z.shape(1);
  const T* gp = g.data();
  const index_t* off = offsets.data();
  const index_t* pcs = pieces.data();
  const index_t* row = rows.data();
  T* gz = grad_Z.mutable_data();
  py::gil_scoped_release release;
#if XL_MULTI_ISA
  if (kIsa == Isa::avx512) return avx512::grad_pieces<T>(gp, off, pcs, row, gz, n, P, d);
  if (kIsa == Isa::avx2) return avx2::grad_pieces<T>(gp, off, pcs, row, gz, n, P, d);
#endif
  generic::grad_pieces<T>(gp, off, pcs, row, gz, n, P, d);
}

}  // namespace

PYBIND11_MODULE(_subword_embed_cpu, m) {
  m.doc() = "Fused subword-average lookup (forward, piece gradient, hashed dropout masks) with OpenMP";
  m.def("forward", &forward<float>);
  m.def("forward", &forward<double>);
  m.def("dropout", &dropout<float>);
  m.def("dropout", &dropout<double>);
  m.def("dropout_bf16", &dropout_bf16);
  m.def("grad_pieces", &grad_pieces<float>);
  m.def("grad_pieces", &grad_pieces<double>);
  m.def("simd_path", [] { return std::string(isa_name(kIsa)); });
  m.def("simd_paths", &compiled_isas);
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
