"""Build the C core, netguard._netguard.

Everything else lives in pyproject.toml. The flags are chosen here:

* default:            -O2, -Wall -Wextra
* NETGUARD_WERROR=1:  warnings are errors (scripts/test, CI and the release wheels set
                      it; a user's sdist build on an unknown compiler does not)
* NETGUARD_DEBUG=1:   -O0 -g3 and the C core's invariant checks (NG_DEBUG)
* NETGUARD_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer (implies debug);
                      run Python with LD_PRELOAD of libasan (see docs/development.md)

A failed compile fails the install: there is no silent fallback to the reference twin.
"""

import os
import sys

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


compile_args: list[str] = []
link_args: list[str] = []
macros: list[tuple[str, str | None]] = []

if sys.platform == "win32":
    compile_args += ["/W4"] + (["/WX"] if _flag("NETGUARD_WERROR") else [])
    libraries = ["ws2_32"]
else:
    compile_args += ["-std=c11", "-Wall", "-Wextra"]
    if _flag("NETGUARD_WERROR"):
        compile_args.append("-Werror")
    libraries = []
    if _flag("NETGUARD_SANITIZE") or _flag("NETGUARD_DEBUG"):
        compile_args += ["-O0", "-g3", "-UNDEBUG"]
        macros.append(("NG_DEBUG", "1"))
    if _flag("NETGUARD_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
        compile_args += san
        link_args += san

# Native mode's preload library (Linux only, docs/native.md): plain C without a Python
# symbol, built as an extension so that it ships inside the package; loaded with
# LD_PRELOAD into child processes, never imported. Everything is hidden but the libc
# functions it interposes. Never sanitizer-instrumented: it is preloaded into programs
# that do not load the sanitizer runtime.
preload_extensions: list[Extension] = []
if sys.platform.startswith("linux"):
    preload_args = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"]
    if _flag("NETGUARD_WERROR"):
        preload_args.append("-Werror")
    if _flag("NETGUARD_DEBUG"):
        preload_args += ["-O0", "-g3", "-UNDEBUG"]
    preload_extensions.append(
        Extension(
            "netguard._preload",
            sources=["src/ng_preload.c", "src/ng_native.c", "src/ng_policy.c"],
            depends=["src/ng_native.h", "src/ng_policy.h"],
            extra_compile_args=preload_args,
            libraries=["dl"],  # dlsym/dladdr live in libdl before glibc 2.34
        )
    )

# Native mode in the test process (Linux only, docs/internals.md "The GOT mechanism"):
# netguard._native patches the GOT entries of loaded objects. Built with the core's flags
# (sanitizer builds included: it lives in the same process).
native_extensions: list[Extension] = []
if sys.platform.startswith("linux"):
    native_extensions.append(
        Extension(
            "netguard._native",
            sources=["src/_native.c", "src/ng_got.c", "src/ng_native.c", "src/ng_policy.c"],
            depends=["src/ng_got.h", "src/ng_native.h", "src/ng_policy.h"],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=["dl", "pthread"],  # in libc since glibc 2.34, separate before
        )
    )

setup(
    ext_modules=[
        Extension(
            "netguard._netguard",
            sources=["src/_netguard.c", "src/ng_build.c", "src/ng_policy.c"],
            depends=["src/ng_build.h", "src/ng_policy.h"],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=libraries,
        ),
        *preload_extensions,
        *native_extensions,
    ],
)
