"""Build the Cython extensions in native/ as gateway._native.*.

GATEWAY_PUREPYTHON=1 skips compilation; the runtime then uses the twins in gateway/_pure.
"""

import os
from pathlib import Path

from setuptools import setup

NATIVE = Path("native")


def extensions():
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    exts = [
        Extension(
            f"gateway._native.{pyx.stem}",
            [str(pyx)],
            include_dirs=[str(NATIVE)],
            extra_compile_args=["-O3"],
        )
        for pyx in sorted(NATIVE.glob("*.pyx"))
    ]
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


setup(ext_modules=extensions())
