"""Triton kernels (GPU, or the CPU interpreter with TRITON_INTERPRET=1 for tests), one module per op."""
