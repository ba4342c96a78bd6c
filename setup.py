"""Builds xlfast's optional native extensions.

Everything native is optional: the package always installs, and each kernel falls back to its
Numba / torch backend when an extension is absent. The build is portable (no -march=native): each
extension compiles its kernels once per instruction set (generic x86-64, AVX2 + FMA, AVX-512F; see
csrc/cpu/multi_isa.h) and picks the one the CPU runs when it is imported. The CUDA kernels (csrc/cuda)
are not built here: the 'cuda' backends build them with nvcc at first use, where a GPU is visible.
Switch (environment): XLFAST_NO_EXT=1 skips every native extension.
"""
import glob
import os
import shutil

from setuptools import setup


def native_extensions():
    if os.environ.get("XLFAST_NO_EXT") == "1":
        return []
    exts = []
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:  # pybind11 is a build requirement; without it, no C++ backend
        return []
    # One extension per source: csrc/cpu/<op>.cpp becomes the module xlfast._<op>_cpu.
    cpu_dir = os.path.join("csrc", "cpu")
    sources = sorted(f for f in os.listdir(cpu_dir) if f.endswith(".cpp")) if os.path.isdir(cpu_dir) else []
    headers = sorted(glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join(cpu_dir, "*.h")))
    gcc = shutil.which("gcc") is not None
    for src in sources:
        op = os.path.splitext(src)[0]
        exts.append(
            Pybind11Extension(
                f"xlfast._{op}_cpu",
                [os.path.join(cpu_dir, src)],
                depends=headers,
                extra_compile_args=["-O3", "-fopenmp"] if gcc else ["-O3"],
                extra_link_args=["-fopenmp"] if gcc else [],
                cxx_std=17,
            )
        )
    return exts


def build_ext_class():
    """A build_ext that warns instead of failing: a broken compiler must never break the install."""
    from setuptools.command.build_ext import build_ext

    class _BuildExt(build_ext):
        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure degrades to pure Python
                print(f"xlfast: native extensions not built ({exc}); pure-Python backends will be used")

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001
                print(f"xlfast: extension {ext.name} not built ({exc}); falling back")

    return _BuildExt


setup(ext_modules=native_extensions(), cmdclass={"build_ext": build_ext_class()})
