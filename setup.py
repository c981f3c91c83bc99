"""Build of dedup's compiled core: the extension list and the Cython directives, in one place.

Environment switches (read at build time):
  DEDUP_CYTHON_DEBUG=1     bounds, wraparound and initialisation checks on, -O0 -g (a CI leg)
  DEDUP_CYTHON_ANNOTATE=1  write the HTML annotation next to the generated C, e.g.
                           build/cython/src_cython/dedup/_state.html (Python overhead in yellow)
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("DEDUP_CYTHON_DEBUG") == "1"
ANNOTATE = os.environ.get("DEDUP_CYTHON_ANNOTATE") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

COMPILE_ARGS = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]

# src_cython/ is the source root of the compiled modules and mirrors their names: Cython finds
# the header of module dedup._state as dedup/_state.pxd on its include path, so each .pyx and
# its .pxd live in src_cython/dedup/ while the built module lands in the dedup package.
# Under src_cython/dedup/: table/ and snapshot/ hold the parts that _state.pyx and
# _snapshot.pyx `include`; kernels/ the C headers of vector kernels (each with its scalar form
# and its run-time choice), platform/ the other C headers (memory, CPU and OS facilities).
# Sources name C headers from src_cython/dedup (e.g. "kernels/crc32c.h"), hence include_dirs.
SOURCES = "src_cython/dedup"

# Every file a module may include, cimport or #include: editing any of them rebuilds every
# module (Cython itself only follows .pxd and .pxi; the C compiler step needs the headers).
DEPENDS = sorted(
    path
    for pattern in ("*.pxd", "*.pxi", "*.h")
    for path in glob.glob(f"{SOURCES}/**/{pattern}", recursive=True)
)


def extension(name):
    """The extension module dedup.<name>, built from src_cython/dedup/<name>.pyx."""
    return Extension(
        f"dedup.{name}",
        [f"{SOURCES}/{name}.pyx"],
        include_dirs=[SOURCES],
        depends=DEPENDS,
        extra_compile_args=COMPILE_ARGS,
    )


EXTENSIONS = [
    extension("_state"),
    extension("_records"),
    extension("_snapshot"),
    extension("_testing"),  # private: the test hooks (tests, tools, benchmarks)
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=DIRECTIVES,
        annotate=ANNOTATE,
        include_path=["src_cython"],
        # Generated C goes out of the source tree, one directory per set of directives, so a
        # debug build never reuses C generated with the checks off, nor the other way round.
        build_dir="build/cython-debug" if DEBUG else "build/cython",
        force=ANNOTATE,
    ),
)
