"""Native mode's in-process mechanism (netguard._native over src/ng_got.c), with real calls.

The self-test hook set replaces the network functions with ones that count their calls
and fail as a denied call does (EACCES), so each test can show a C library's call being
refused while the hooks are in place and going through after ``uninstall()``:

- ``ctypes`` lookups of libc functions (through the hooked ``dlsym``);
- Python's own ``_socket`` module (its C code calls libc ``connect``), alone and under
  netguard's Python-level hooks (the two layers compose);
- small shared libraries compiled here with gcc, linked four ways (lazy binding without
  RELRO, partial RELRO, full RELRO with ``-z now``, ``-fno-plt``), loaded before the
  install (found by the scan) and after it (found through the hooked ``dlopen``);
- psycopg2 (libpq) and grpcio (gRPC's C core), in process and in fresh interpreters that
  import them only after the install;
- what the hooked ``dlopen``/``dlsym`` must keep working: a bare library name resolved
  against the caller's RPATH/RUNPATH ($ORIGIN), ``RTLD_NEXT`` and ``RTLD_DEFAULT``
  relative to the caller;
- ``uninstall()`` restoring every slot and its page protection, ``dlclose`` of a patched
  library, and 1,000 install/uninstall cycles while C threads call ``connect`` and load
  and unload a library.

Every destination is a listener on 127.0.0.1. Linux only: elsewhere the module is not built.
"""

from __future__ import annotations

import _ctypes
import ctypes
import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("native mode's GOT mechanism is Linux only", allow_module_level=True)

# Imported directly: a broken build fails here instead of skipping.
from netguard import _native

EACCES = errno.EACCES
NO_RECOVERY = 3  # <netdb.h>


# --------------------------------------------------------------------------- C sources

PROBE_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* A pointer to connect kept in (RELRO) data: an absolute relocation, not a GOT slot. */
int (*const probe_connect_pointer)(int, const struct sockaddr *, socklen_t) = connect;

static void
loopback(struct sockaddr_in *a, int port)
{
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = htons((unsigned short)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* Each probe returns 0 on success, else the errno (or the resolver's code). */
static int
connect_via(int (*fn)(int, const struct sockaddr *, socklen_t), int port)
{
    struct sockaddr_in a;
    loopback(&a, port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int e = fn(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    close(fd);
    return e;
}

int
probe_connect(int port)
{
    struct sockaddr_in a;
    loopback(&a, port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int e = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    close(fd);
    return e;
}

int
probe_connect_pointer_call(int port)
{
    return connect_via(probe_connect_pointer, port);
}

static int
udp_probe(int port, int how)
{
    struct sockaddr_in a;
    char byte = 'x';
    struct iovec v = {&byte, 1};
    struct msghdr m;
    struct mmsghdr mm;
    loopback(&a, port);
    memset(&m, 0, sizeof(m));
    m.msg_name = &a;
    m.msg_namelen = sizeof(a);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    memset(&mm, 0, sizeof(mm));
    mm.msg_hdr = m;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    long rc;
    if (how == 0) {
        rc = sendto(fd, &byte, 1, 0, (struct sockaddr *)&a, sizeof(a));
    }
    else if (how == 1) {
        rc = sendmsg(fd, &m, 0);
    }
    else {
        rc = sendmmsg(fd, &mm, 1, 0);
    }
    int e = rc >= 0 ? 0 : errno;
    close(fd);
    return e;
}

int probe_sendto(int port) { return udp_probe(port, 0); }
int probe_sendmsg(int port) { return udp_probe(port, 1); }
int probe_sendmmsg(int port) { return udp_probe(port, 2); }

int
probe_getaddrinfo(const char *host)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    errno = 0;
    int rc = getaddrinfo(host, "80", &hints, &res);
    if (rc == 0) {
        freeaddrinfo(res);
        return 0;
    }
    return rc == EAI_SYSTEM ? errno : 1000 - rc;
}

int
probe_gethostbyname(const char *host, int two)
{
    struct hostent *h = two ? gethostbyname2(host, AF_INET) : gethostbyname(host);
    return h != NULL ? 0 : h_errno;
}

int
probe_gethostbyname_r(const char *host, int two)
{
    struct hostent he, *res = NULL;
    char buf[8192];
    int herr = 0;
    int rc = two ? gethostbyname2_r(host, AF_INET, &he, buf, sizeof(buf), &res, &herr)
                 : gethostbyname_r(host, &he, buf, sizeof(buf), &res, &herr);
    return rc != 0 ? rc : res != NULL ? 0 : 1000 + herr;
}

void *probe_dlopen(const char *file, int mode) { return dlopen(file, mode); }
int probe_dlclose(void *handle) { return dlclose(handle); }
void *probe_dlsym(void *handle, const char *name) { return dlsym(handle, name); }
void *probe_dlsym_default(const char *name) { return dlsym(RTLD_DEFAULT, name); }
void *probe_dlsym_next(const char *name) { return dlsym(RTLD_NEXT, name); }

/* connect() a UDP socket to loopback until *stop: no packet, one system call. 0, or the
   first errno that is not EACCES. */
int
probe_spin(int port, volatile int *stop, long *ok, long *denied)
{
    struct sockaddr_in a;
    loopback(&a, port);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno;
    }
    do {
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            (*ok)++;
        }
        else if (errno == EACCES) {
            (*denied)++;
        }
        else {
            int e = errno;
            close(fd);
            return e;
        }
    } while (!*stop);
    close(fd);
    return 0;
}

/* dlopen and dlclose `file` until *stop, pausing a little between rounds (each round
   rescans the process and holds the loader's lock): 0, or -1 when a dlopen failed. */
int
probe_load_loop(const char *file, volatile int *stop, long *loads)
{
    do {
        void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            return -1;
        }
        (*loads)++;
        dlclose(h);
        usleep(500);
    } while (!*stop);
    return 0;
}

#ifdef NG_NEXT_VALUE
int ng_next_probe(void) { return NG_NEXT_VALUE; }
#endif
"""

SIBLING_C = "int ng_sibling_marker(void) { return 42; }\n"
LOCAL_DEP_C = "int ng_local_marker(void) { return 7; }\n"

#: How each probe library is linked: which kinds of slot the scan must handle.
FLAVOURS = {
    # lazy binding, no RELRO: JUMP_SLOTs in writable .got.plt, holding PLT stubs
    "lazy": ["-Wl,-z,lazy", "-Wl,-z,norelro"],
    # partial RELRO: GLOB_DAT and absolute pointers read-only, JUMP_SLOTs writable
    "relro": ["-Wl,-z,lazy", "-Wl,-z,relro"],
    # full RELRO: every slot read-only after startup (mprotect for each write)
    "now": ["-Wl,-z,now", "-Wl,-z,relro"],
    # no PLT: calls go through GLOB_DAT slots
    "noplt": ["-fno-plt", "-Wl,-z,now", "-Wl,-z,relro"],
}


def _compile(cc: str, source: Path, out: Path, *flags: str) -> Path:
    # no sibling calls: dlopen and dlsym must see the probe function as their caller
    cmd = [cc, "-shared", "-fPIC", "-O1", "-fno-optimize-sibling-calls", "-o", str(out),
           str(source), *flags]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return out


class Libs:
    """The test libraries, compiled once per session."""

    def __init__(self, root: Path) -> None:
        cc = shutil.which("gcc") or shutil.which("cc")
        assert cc, "these tests compile small shared libraries: gcc (or cc) must be on PATH"
        self.root = root
        probe = root / "probe.c"
        probe.write_text(PROBE_C)
        (root / "sibling.c").write_text(SIBLING_C)
        (root / "local_dep.c").write_text(LOCAL_DEP_C)
        self.flavour: dict[str, Path] = {}
        for name, flags in FLAVOURS.items():
            self.flavour[name] = _compile(cc, probe, root / f"libng_probe_{name}.so", *flags)
        # the same code, loaded only after an install (each test its own copy)
        self.later = [
            _compile(cc, probe, root / f"libng_probe_later{i}.so", *FLAVOURS["now"])
            for i in range(3)
        ]
        self.sibling = _compile(cc, root / "sibling.c", root / "libng_sibling.so")
        # bare-name dlopen through the caller's RUNPATH / RPATH ($ORIGIN/sub)
        sub = root / "sub"
        sub.mkdir()
        self.origin: dict[str, Path] = {}
        for kind, tags in (("runpath", "--enable-new-dtags"), ("rpath", "--disable-new-dtags")):
            _compile(cc, root / "sibling.c", sub / f"libng_sib_{kind}.so")
            self.origin[kind] = _compile(
                cc,
                probe,
                root / f"libng_origin_{kind}.so",
                f"-Wl,{tags}",
                "-Wl,-rpath,$ORIGIN/sub",
            )
        # RTLD_NEXT: ng_next_probe in a library (1) and in the library it needs (2)
        next_dir = root / "next"
        next_dir.mkdir()
        _compile(cc, probe, next_dir / "libng_next_b.so", "-DNG_NEXT_VALUE=2")
        self.next_a = _compile(
            cc,
            probe,
            next_dir / "libng_next_a.so",
            "-DNG_NEXT_VALUE=1",
            f"-L{next_dir}",
            "-Wl,--no-as-needed",  # keep the DT_NEEDED although nothing of it is used
            "-lng_next_b",
            "-Wl,-rpath,$ORIGIN",
        )
        # RTLD_DEFAULT from a library loaded RTLD_LOCAL: its dependency is in its own scope
        dep_dir = root / "localdep"
        dep_dir.mkdir()
        _compile(cc, root / "local_dep.c", dep_dir / "libng_local_dep.so")
        self.local_user = _compile(
            cc,
            probe,
            dep_dir / "libng_local_user.so",
            f"-L{dep_dir}",
            "-Wl,--no-as-needed",
            "-lng_local_dep",
            "-Wl,-rpath,$ORIGIN",
        )


@pytest.fixture(scope="session")
def libs(tmp_path_factory: pytest.TempPathFactory) -> Libs:
    return Libs(tmp_path_factory.mktemp("native_libs"))


def load(path: Path, mode: int = os.RTLD_LOCAL) -> ctypes.CDLL:
    """A probe library through ctypes, with its functions typed."""
    lib = ctypes.CDLL(str(path), mode=mode | os.RTLD_NOW, use_errno=True)
    ptr, text = ctypes.c_void_p, ctypes.c_char_p
    for name in (
        "probe_connect",
        "probe_connect_pointer_call",
        "probe_sendto",
        "probe_sendmsg",
        "probe_sendmmsg",
    ):
        getattr(lib, name).argtypes = [ctypes.c_int]
    lib.probe_getaddrinfo.argtypes = [text]
    lib.probe_gethostbyname.argtypes = [text, ctypes.c_int]
    lib.probe_gethostbyname_r.argtypes = [text, ctypes.c_int]
    lib.probe_dlopen.argtypes = [text, ctypes.c_int]
    lib.probe_dlopen.restype = ptr
    lib.probe_dlclose.argtypes = [ptr]
    lib.probe_dlsym.argtypes = [ptr, text]
    lib.probe_dlsym.restype = ptr
    lib.probe_dlsym_default.argtypes = [text]
    lib.probe_dlsym_default.restype = ptr
    lib.probe_dlsym_next.argtypes = [text]
    lib.probe_dlsym_next.restype = ptr
    lib.probe_spin.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 3
    lib.probe_load_loop.argtypes = [text, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def unload(lib: ctypes.CDLL) -> None:
    _ctypes.dlclose(lib._handle)


@pytest.fixture
def native() -> Iterator[Any]:
    """netguard._native, nothing installed; whatever a test installs is removed after it."""
    assert not _native.installed(), "an earlier test left the native hooks installed"
    try:
        yield _native
    finally:
        _native.uninstall()
    assert not _native.installed()
    assert _native.patched() == []


def sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(host))


def libc_connect(address: tuple[str, int]) -> int:
    """connect() looked up by ctypes in a fresh CDLL(None): 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)  # a new one: ctypes caches what it looked up
    addr = sockaddr_in(*address)
    with socket.socket() as s:  # blocking: the raw call must not see EINPROGRESS
        ctypes.set_errno(0)
        rc = libc.connect(s.fileno(), addr, len(addr))
        return 0 if rc == 0 else ctypes.get_errno()


def function_address(name: str) -> int:
    """What ctypes finds for `name` in a fresh CDLL(None), through dlsym."""
    return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value or 0


def patched_in(path: Path | str) -> set[str]:
    """The symbols patched in the object at `path`."""
    return {sym for obj, sym, _, _ in _native.patched() if same_file(obj, path)}


def same_file(a: Path | str, b: Path | str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def page_writable(address: int) -> bool:
    """Whether the page holding `address` is writable now, from /proc/self/maps."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return perms[1] == "w"
    raise AssertionError(f"{address:#x} is not mapped")


def read_pointer(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


# --------------------------------------------------------------------------- the API


def test_module_surface(native: Any) -> None:
    assert native.SELFTEST_NAMES == (
        "connect", "sendto", "sendmsg", "sendmmsg", "getaddrinfo",
        "gethostbyname", "gethostbyname_r", "gethostbyname2", "gethostbyname2_r",
    )  # fmt: skip
    assert not native.installed()
    assert native.patched() == []
    native.uninstall()  # nothing installed: a no-op
    native.rescan()


def test_unknown_name_and_double_install(native: Any) -> None:
    with pytest.raises(ValueError, match="'nosuchfn'"):
        native._selftest_install(["connect", "nosuchfn"])
    assert not native.installed()
    with pytest.raises(TypeError):
        native._selftest_install([b"connect"])
    native._selftest_install(["connect"])
    assert native.installed()
    with pytest.raises(RuntimeError, match="already installed"):
        native._selftest_install(["sendto"])
    native.uninstall()
    assert not native.installed()


# --------------------------------------------------------------------------- ctypes and _socket


def test_ctypes_connect_refused_then_restored(native: Any, loopback_tcp_server: Any) -> None:
    address = loopback_tcp_server.address
    real = function_address("connect")
    assert libc_connect(address) == 0
    native._selftest_install(["connect"])
    assert libc_connect(address) == EACCES
    assert native._selftest_count("connect") == 1
    assert function_address("connect") != real  # dlsym answered with the replacement
    native.uninstall()
    assert function_address("connect") == real
    assert libc_connect(address) == 0
    assert native._selftest_count("connect") == 1  # the real connect, not the replacement


def test_pointer_from_dlsym_passes_through_after_uninstall(
    native: Any, loopback_tcp_server: Any
) -> None:
    native._selftest_install(["connect"])
    libc = ctypes.CDLL(None, use_errno=True)
    kept = libc.connect  # ctypes keeps this pointer: the replacement
    addr = sockaddr_in(*loopback_tcp_server.address)
    with socket.socket() as s:
        assert kept(s.fileno(), addr, len(addr)) == -1
        assert ctypes.get_errno() == EACCES
    native.uninstall()
    with socket.socket() as s:
        assert kept(s.fileno(), addr, len(addr)) == 0  # reached the real connect
    assert native._selftest_count("connect") == 2


def test_python_socket_connect_refused(native: Any, loopback_tcp_server: Any) -> None:
    native._selftest_install(["connect"])
    assert "connect" in patched_in(_socket_path())
    with socket.socket() as s, pytest.raises(PermissionError) as info:
        s.connect(loopback_tcp_server.address)
    assert info.value.errno == EACCES
    with pytest.raises(PermissionError):
        socket.create_connection(loopback_tcp_server.address, timeout=5)
    assert native._selftest_count("connect") == 2
    assert loopback_tcp_server.accepted == 0  # nothing reached the kernel
    native.uninstall()
    socket.create_connection(loopback_tcp_server.address, timeout=5).close()


def _socket_path() -> str:
    """The object that holds _socket's C code (an extension module, or the interpreter)."""
    import _socket

    return getattr(_socket, "__file__", None) or sys.executable


def test_python_getaddrinfo_refused(native: Any) -> None:
    native._selftest_install(["getaddrinfo"])
    with pytest.raises(OSError) as info:
        socket.getaddrinfo("localhost", 80)
    assert info.value.errno == EACCES
    native.uninstall()
    assert socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)


def test_python_and_native_hooks_compose(native: Any, loopback_tcp_server: Any) -> None:
    """netguard's Python-level hook allows loopback; the native hook below it refuses."""
    from netguard import _impl
    from netguard import _netguard as ng
    from netguard.rules import parse_rule

    denied: list[tuple[Any, ...]] = []
    policy = _impl.load("c").compile([parse_rule("127.0.0.0/8", source="test")])
    ng.install(lambda *call: denied.append(call))
    try:
        ng.activate(policy, False)
        native._selftest_install(["connect"])
        with socket.socket() as s, pytest.raises(PermissionError):
            s.connect(loopback_tcp_server.address)
        assert denied == []  # the Python layer allowed it
        assert native._selftest_count("connect") == 1  # and the C layer refused it
        native.uninstall()
        with socket.socket() as s:
            s.settimeout(5)
            s.connect(loopback_tcp_server.address)
    finally:
        ng.activate(None, False)
        ng.uninstall()


# --------------------------------------------------------------------------- compiled libraries


def probe_all(lib: ctypes.CDLL, tcp_port: int, udp_port: int) -> dict[str, int]:
    return {
        "connect": lib.probe_connect(tcp_port),
        "connect (pointer in data)": lib.probe_connect_pointer_call(tcp_port),
        "sendto": lib.probe_sendto(udp_port),
        "sendmsg": lib.probe_sendmsg(udp_port),
        "sendmmsg": lib.probe_sendmmsg(udp_port),
        "getaddrinfo": lib.probe_getaddrinfo(b"localhost"),
        "gethostbyname": lib.probe_gethostbyname(b"localhost", 0),
        "gethostbyname2": lib.probe_gethostbyname(b"localhost", 1),
        "gethostbyname_r": lib.probe_gethostbyname_r(b"localhost", 0),
        "gethostbyname2_r": lib.probe_gethostbyname_r(b"localhost", 1),
    }


DENIED = {
    "connect": EACCES,
    "connect (pointer in data)": EACCES,
    "sendto": EACCES,
    "sendmsg": EACCES,
    "sendmmsg": EACCES,
    "getaddrinfo": EACCES,  # EAI_SYSTEM with errno EACCES
    "gethostbyname": NO_RECOVERY,
    "gethostbyname2": NO_RECOVERY,
    "gethostbyname_r": EACCES,
    "gethostbyname2_r": EACCES,
}
ALLOWED = dict.fromkeys(DENIED, 0)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_library_loaded_before_install(
    native: Any, libs: Libs, flavour: str, loopback_tcp: tuple[str, int], loopback_udp: Any
) -> None:
    lib = load(libs.flavour[flavour])
    tcp, udp = loopback_tcp[1], loopback_udp.getsockname()[1]
    assert probe_all(lib, tcp, udp) == ALLOWED
    native._selftest_install(native.SELFTEST_NAMES)
    assert patched_in(libs.flavour[flavour]) >= set(native.SELFTEST_NAMES)
    assert probe_all(lib, tcp, udp) == DENIED
    for name in native.SELFTEST_NAMES:
        assert native._selftest_count(name) >= 1, name
    native.uninstall()
    assert patched_in(libs.flavour[flavour]) == set()
    assert probe_all(lib, tcp, udp) == ALLOWED


def test_library_loaded_after_install(
    native: Any, libs: Libs, loopback_tcp: tuple[str, int], loopback_udp: Any
) -> None:
    native._selftest_install(native.SELFTEST_NAMES)
    lib = load(libs.later[0])  # dlopen from _ctypes: the hooked dlopen scans it
    assert patched_in(libs.later[0]) >= set(native.SELFTEST_NAMES)
    tcp, udp = loopback_tcp[1], loopback_udp.getsockname()[1]
    assert probe_all(lib, tcp, udp) == DENIED
    # a library that this one loads in turn is scanned as well
    inner = lib.probe_dlopen(str(libs.later[1]).encode(), os.RTLD_NOW)
    assert inner
    assert "connect" in patched_in(libs.later[1])
    connect_inner = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(
        lib.probe_dlsym(inner, b"probe_connect")
    )
    assert connect_inner(tcp) == EACCES
    native.uninstall()
    assert probe_all(lib, tcp, udp) == ALLOWED
    assert connect_inner(tcp) == 0
    assert lib.probe_dlclose(inner) == 0


def test_dlclose_of_a_patched_library(
    native: Any, libs: Libs, loopback_tcp: tuple[str, int]
) -> None:
    native._selftest_install(["connect"])
    lib = load(libs.later[2])
    assert "connect" in patched_in(libs.later[2])
    assert lib.probe_connect(loopback_tcp[1]) == EACCES
    unload(lib)  # through _ctypes' hooked dlclose: the library is unmapped
    assert patched_in(libs.later[2]) == set()
    assert str(libs.later[2]) not in Path("/proc/self/maps").read_text()
    native.uninstall()  # must not touch the unmapped slots
    assert libc_connect(loopback_tcp) == 0


def test_uninstall_restores_every_slot_and_protection(native: Any, libs: Libs) -> None:
    load(libs.flavour["now"])
    load(libs.flavour["lazy"])
    native._selftest_install(native.SELFTEST_NAMES)
    patches = native.patched()
    assert patches
    replacement = {sym: function_address(sym) for sym in ("connect", "getaddrinfo", "sendto")}
    writable = {}
    for obj, sym, slot, old in patches:
        assert read_pointer(slot) != old, (obj, sym)
        if sym in replacement:
            assert read_pointer(slot) == replacement[sym], (obj, sym)
        writable[slot] = page_writable(slot)
    # full RELRO: every slot of that library sits on a page that is read-only again
    now_slots = [p for p in patches if same_file(p[0], libs.flavour["now"])]
    assert now_slots and not any(writable[slot] for _, _, slot, _ in now_slots)
    lazy_slots = [p for p in patches if same_file(p[0], libs.flavour["lazy"])]
    assert lazy_slots and all(writable[slot] for _, _, slot, _ in lazy_slots)
    native.uninstall()
    assert native.patched() == []
    for obj, sym, slot, old in patches:
        assert read_pointer(slot) == old, (obj, sym)
        assert page_writable(slot) == writable[slot], (obj, sym)
    # a second install patches the same slots (their values may differ: a lazily bound
    # slot called in between holds the function now, no longer the PLT stub)
    native._selftest_install(native.SELFTEST_NAMES)
    again = {(obj, sym, slot) for obj, sym, slot, _ in native.patched()}
    assert {(obj, sym, slot) for obj, sym, slot, _ in patches} <= again


def test_stats(native: Any, libs: Libs) -> None:
    load(libs.flavour["relro"])
    native._selftest_install(["connect"])
    stats = native.stats()
    assert stats["scans"] == 1
    assert stats["objects"] >= 2
    assert stats["patched"] == len(native.patched())
    assert stats["failed"] == 0
    native.rescan()
    assert native.stats()["scans"] == 2
    assert native.stats()["patched"] == stats["patched"]  # nothing new to patch


# --------------------------------------------------------------------------- dlopen, dlsym


@pytest.mark.parametrize("kind", ["runpath", "rpath"])
def test_dlopen_bare_name_uses_the_callers_search_path(native: Any, libs: Libs, kind: str) -> None:
    """glibc resolves a bare name against the caller's RUNPATH/RPATH ($ORIGIN/sub here)."""
    lib = load(libs.origin[kind])
    native._selftest_install(["connect"])
    handle = lib.probe_dlopen(f"libng_sib_{kind}.so".encode(), os.RTLD_NOW)
    assert handle, f"dlopen of a bare name through the caller's {kind.upper()} failed"
    marker = ctypes.CFUNCTYPE(ctypes.c_int)(lib.probe_dlsym(handle, b"ng_sibling_marker"))
    assert marker() == 42
    assert lib.probe_dlclose(handle) == 0


def test_dlsym_rtld_next_is_relative_to_the_caller(native: Any, libs: Libs) -> None:
    """RTLD_NEXT: the next definition after the *calling* object (here: in its dependency)."""
    a = load(libs.next_a)
    before = a.probe_dlsym_next(b"ng_next_probe")
    assert before
    assert ctypes.CFUNCTYPE(ctypes.c_int)(before)() == 2  # the dependency's, not a's own
    native._selftest_install(["connect"])
    assert "dlsym" in patched_in(libs.next_a)
    assert a.probe_dlsym_next(b"ng_next_probe") == before
    native.uninstall()
    assert a.probe_dlsym_next(b"ng_next_probe") == before


def test_dlsym_rtld_default_answers_as_before(native: Any, libs: Libs) -> None:
    user = load(libs.local_user)  # RTLD_LOCAL, with a dependency of its own
    before = {
        name: user.probe_dlsym_default(name)
        for name in (b"ng_local_marker", b"probe_connect", b"socket", b"nosuchsymbol")
    }
    assert before[b"socket"] and before[b"probe_connect"] and before[b"ng_local_marker"]
    native._selftest_install(["connect"])
    assert "dlsym" in patched_in(libs.local_user)
    assert {name: user.probe_dlsym_default(name) for name in before} == before
    # a hooked name: the replacement
    assert user.probe_dlsym_default(b"connect") == function_address("connect")
    assert native._selftest_count("connect") == 0
    native.uninstall()
    assert user.probe_dlsym_default(b"connect") == function_address("connect")


# --------------------------------------------------------------------------- canonical PLT

CANONICAL_HOOK_C = r"""
#include <errno.h>
#include <sys/socket.h>
#include "ng_got.h"
static void *real_connect;
static int calls, deny = 1;
static int
my_connect(int fd, const struct sockaddr *a, socklen_t l)
{
    if (++calls > 100) {
        return -2; /* recursing: the "real" function led back here */
    }
    if (deny) {
        errno = EACCES;
        return -1;
    }
    return ((int (*)(int, const struct sockaddr *, socklen_t))real_connect)(fd, a, l);
}
int hook_install(void)
{
    ng_got_hook h = {"connect", (void *)my_connect, &real_connect};
    return ng_got_install(&h, 1);
}
int hook_calls(void) { return calls; }
void hook_deny(int d) { deny = d; }
"""

CANONICAL_MAIN_C = r"""
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
int hook_install(void);
int hook_calls(void);
void hook_deny(int);
const char *ng_got_error(void);
void ng_got_uninstall(void);
int (*volatile taken)(int, const struct sockaddr *, socklen_t);
int
main(void)
{
    struct sockaddr_in a;
    taken = connect; /* non-PIC code takes the address: a canonical PLT entry */
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(9);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_DGRAM, 0); /* UDP connect: no packet */
    if (hook_install() != 0) {
        printf("install failed: %s\n", ng_got_error());
        return 1;
    }
    int d1 = connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1 && errno == EACCES;
    int d2 = taken(fd, (struct sockaddr *)&a, sizeof(a)) == -1 && errno == EACCES;
    hook_deny(0);
    int p1 = connect(fd, (struct sockaddr *)&a, sizeof(a));
    int p2 = taken(fd, (struct sockaddr *)&a, sizeof(a));
    int during = hook_calls();
    ng_got_uninstall();
    int after = connect(fd, (struct sockaddr *)&a, sizeof(a));
    printf("denied %d %d passed %d %d calls %d after %d %d\n", d1, d2, p1, p2, during, after,
           hook_calls());
    return 0;
}
"""


@pytest.mark.source_tree
@pytest.mark.parametrize("binding", ["lazy", "now"])
def test_canonical_plt_of_a_non_pie_program(tmp_path: Path, binding: str) -> None:
    """A non-PIE program that takes connect's address makes every object bind to its PLT
    entry; the real function behind it must be found, or a pass-through would recurse."""
    src = Path(__file__).resolve().parent.parent / "src"
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc
    (tmp_path / "hook.c").write_text(CANONICAL_HOOK_C)
    (tmp_path / "main.c").write_text(CANONICAL_MAIN_C)
    for cmd in (
        [cc, "-std=c11", "-O1", "-fPIC", "-shared", f"-I{src}", "-o", "libhook.so", "hook.c",
         str(src / "ng_got.c"), "-ldl", "-lpthread"],
        [cc, "-O1", "-no-pie", "-fno-pic", f"-Wl,-z,{binding}", "-o", "main", "main.c",
         "-L.", "-lhook", "-Wl,-rpath,$ORIGIN", "-ldl"],
    ):  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    dynsym = subprocess.run(
        ["readelf", "--dyn-syms", "-W", "main"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    plt = [line for line in dynsym.splitlines() if " UND connect" in line]
    assert plt and int(plt[0].split()[1], 16) != 0, "no canonical PLT entry was made"
    proc = subprocess.run(
        [str(tmp_path / "main")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == "denied 1 1 passed 0 0 calls 4 after 0 4".split()


# --------------------------------------------------------------------------- threads


def test_install_uninstall_1000_times_while_threads_call_connect(
    native: Any, libs: Libs, loopback_udp: Any
) -> None:
    lib = load(libs.flavour["now"])
    port = loopback_udp.getsockname()[1]
    stop = ctypes.c_int(0)
    counts = [(ctypes.c_long(0), ctypes.c_long(0)) for _ in range(2)]
    loads = ctypes.c_long(0)
    results: dict[str, int] = {}

    def spin(i: int) -> None:
        ok, denied = counts[i]
        results[f"spin{i}"] = lib.probe_spin(
            port, ctypes.addressof(stop), ctypes.addressof(ok), ctypes.addressof(denied)
        )

    def load_loop() -> None:
        results["load"] = lib.probe_load_loop(
            str(libs.sibling).encode(), ctypes.addressof(stop), ctypes.addressof(loads)
        )

    threads = [threading.Thread(target=spin, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=load_loop))
    for t in threads:
        t.start()
    try:
        for _ in range(1000):
            native._selftest_install(["connect"])
            native.uninstall()
    finally:
        stop.value = 1
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert results == {"spin0": 0, "spin1": 0, "load": 0}  # only EACCES or success
    assert sum(ok.value + denied.value for ok, denied in counts) > 0
    assert loads.value > 0
    assert native.patched() == []
    assert lib.probe_sendto(port) == 0


# --------------------------------------------------------------------------- real libraries

PG_MESSAGE = "netguard fake postgres"


class FakePostgres:
    """A loopback listener that answers libpq's startup message with a FATAL error."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        body = b"SFATAL\0C28000\0M" + PG_MESSAGE.encode() + b"\0\0"
        reply = b"E" + struct.pack("!I", len(body) + 4) + body
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                try:
                    (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
                    conn.recv(length - 4, socket.MSG_WAITALL)
                    conn.sendall(reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()


@pytest.fixture
def fake_postgres() -> Iterator[FakePostgres]:
    server = FakePostgres()
    try:
        yield server
    finally:
        server.close()


def pg_connect(port: int) -> str:
    import psycopg2

    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user="netguard",
            dbname="netguard",
            connect_timeout=10,
            sslmode="disable",
            gssencmode="disable",
        )
    return str(info.value)


def test_psycopg2_loaded_before_install(native: Any, fake_postgres: FakePostgres) -> None:
    import psycopg2  # libpq is loaded here, before the install

    assert PG_MESSAGE in pg_connect(fake_postgres.port)  # it speaks to the fake server
    # connect only: libpq also calls getaddrinfo, for a numeric host too
    native._selftest_install(["connect"])
    libpq = {obj for obj, sym, _, _ in native.patched() if sym == "connect" and "libpq" in obj}
    assert libpq, "libpq's connect slot was not patched"
    message = pg_connect(fake_postgres.port)
    assert "Permission denied" in message, message
    assert native._selftest_count("connect") >= 1
    assert fake_postgres.accepted == 1
    native.uninstall()
    assert PG_MESSAGE in pg_connect(fake_postgres.port)
    assert fake_postgres.accepted == 2
    assert psycopg2.__libpq_version__ > 0


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_psycopg2_imported_after_install(fake_postgres: FakePostgres) -> None:
    proc = run_python(
        """
        import sys
        from netguard import _native
        _native._selftest_install(["connect"])
        import psycopg2  # loaded now: found through the hooked dlopen
        def attempt():
            try:
                psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="u",
                                 dbname="d", connect_timeout=10, sslmode="disable",
                                 gssencmode="disable")
            except psycopg2.OperationalError as exc:
                return str(exc).replace("\\n", " ")
        print("denied:", attempt())
        print("libpq:", any("libpq" in o and s == "connect" for o, s, _, _ in _native.patched()))
        _native.uninstall()
        print("allowed:", attempt())
        """,
        str(fake_postgres.port),
    )
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert "Permission denied" in lines["denied"], proc.stdout
    assert lines["libpq"] == "True"
    assert PG_MESSAGE in lines["allowed"], proc.stdout
    assert fake_postgres.accepted == 1


def test_grpc_channel_imported_after_install() -> None:
    proc = run_python(
        """
        from netguard import _native
        _native._selftest_install(["connect"])
        from concurrent import futures
        import grpc  # gRPC's C core is loaded now: found through the hooked dlopen

        def ping(request, context):
            return b"pong:" + request

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "ng.Test", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        options = [("grpc.use_local_subchannel_pool", 1)]

        def call(wait):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                return channel.unary_unary("/ng.Test/Ping")(b"x", timeout=60,
                                                           wait_for_ready=wait)

        try:
            call(False)
            print("denied: no")
        except grpc.RpcError as exc:
            print("denied:", exc.code().name, exc.details())
        print("counted:", _native._selftest_count("connect") > 0)
        print("cygrpc:", any("cygrpc" in o for o, s, _, _ in _native.patched()))
        _native.uninstall()
        print("allowed:", call(True).decode())
        server.stop(None)
        """
    )
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["denied"].startswith("UNAVAILABLE"), proc.stdout
    assert lines["counted"] == "True"
    assert lines["cygrpc"] == "True"
    assert lines["allowed"] == "pong:x"
