// The kernels of one op, compiled once per instruction set, so that a built wheel runs on any x86-64 CPU
// (no -march=native) and still uses AVX2 / AVX-512 where the CPU has them: the including file defines
// XL_KERNELS (its kernels header, a string) and includes this inside a namespace; the kernels header is
// then included three times, into the namespaces generic, avx2 (AVX2 + FMA) and avx512 (AVX-512F), each
// compiled for that target (OpenMP regions inherit it). XL_AVX512 is defined while the last one compiles,
// for code written with AVX-512 intrinsics. `best_isa()` picks, once, the variant this CPU runs. Where the
// compiler is not GCC on x86-64, only the generic variant exists.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define XL_MULTI_ISA 1
#else
#define XL_MULTI_ISA 0
#endif

namespace generic {
#include XL_KERNELS
}  // namespace generic

#if XL_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include XL_KERNELS
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC diagnostic push
// GCC's own _mm512_undefined_* (the pass-through of several intrinsics) reads an uninitialised value on purpose
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define XL_AVX512 1
namespace avx512 {
#include XL_KERNELS
}  // namespace avx512
#undef XL_AVX512
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

enum class Isa { generic, avx2, avx512 };

inline Isa best_isa() {
#if XL_MULTI_ISA
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512f" : isa == Isa::avx2 ? "avx2" : "generic";
}

// The variants compiled into this module, as names.
inline std::vector<std::string> compiled_isas() {
  if (XL_MULTI_ISA) return {"generic", "avx2", "avx512f"};
  return {"generic"};
}
