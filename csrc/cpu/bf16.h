// bf16 <-> float: bf16 is the top half of a float; rounding to nearest even, as torch converts. Included
// by the kernels headers, i.e. once inside each instruction-set namespace of multi_isa.h (hence no guard).
static inline float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
static inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
