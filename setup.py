"""Build hook for tinytensor's native kernels (tinytensor/csrc/native.c); the project's metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds, a warning says the build failed, and
tinytensor runs its NumPy kernels (tinytensor.kernels.native.available() tells which).
"""
import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    flags, libs = ["/O2", "/fp:precise"], []
else:  # -fopenmp-simd: the `omp simd` pragmas only (no OpenMP runtime); errno and FP traps are never read (without
    # -fno-trapping-math GCC keeps the float selects as branches on AVX2 and the loops stay scalar: 7x slower)
    flags, libs = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c99"], ["m", "pthread"]

setup(ext_modules=[Extension("tinytensor._native", sources=["tinytensor/csrc/native.c"], extra_compile_args=flags,
                             libraries=libs, optional=True)])
