# shellcheck shell=bash
# Shared by scripts/test and scripts/demo (sourced, never run): pick a Python, keep a
# virtual environment, build and install netguard into it, run a command inside a private
# network namespace. Everything here fails loudly; nothing falls back silently.

ng_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ng_say() { printf '==> %s\n' "$*"; }
ng_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The same truth table as setup.py's _flag().
ng_flag() {
    local value=${!1:-}
    value=${value,,}
    value=${value//[[:space:]]/}
    [[ $value == 1 || $value == true || $value == yes || $value == on ]]
}

# The interpreter the venv is made from: $PYTHON, else python3.11, else python3.
# A pyenv shim can exist for a version that is not installed, so each candidate is run.
ng_pick_python() {
    local candidate
    local -a candidates
    if [[ -n ${PYTHON:-} ]]; then
        candidates=("$PYTHON")
    else
        candidates=(python3.11 python3)
    fi
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
            ng_base_python=$candidate
            return 0
        fi
    done
    ng_die "no usable Python >= 3.10 among: ${candidates[*]} (set PYTHON=/path/to/python3.X; with pyenv: PYTHON=\"\$(pyenv prefix 3.12.1)/bin/python3\")"
}

# Identity of an interpreter: a venv is reused only if it was made from the same one.
ng_identity='import sys; print(sys.implementation.name, sys.version, sys.base_prefix)'

# Create the venv at $NETGUARD_VENV (default .venv-test), or reuse it when it was made
# from the same interpreter. Sets ng_venv and ng_python.
ng_ensure_venv() {
    ng_venv=${NETGUARD_VENV:-$ng_root/.venv-test}
    ng_python=$ng_venv/bin/python
    local want have
    want=$("$ng_base_python" -c "$ng_identity") || ng_die "cannot run $ng_base_python"
    if [[ -x $ng_python ]] && have=$("$ng_python" -c "$ng_identity" 2>/dev/null) \
        && [[ $have == "$want" ]]; then
        ng_say "reusing venv $ng_venv"
        return 0
    fi
    if [[ -e $ng_venv ]]; then
        [[ -f $ng_venv/pyvenv.cfg ]] \
            || ng_die "$ng_venv exists and is not a virtual environment; move it or set NETGUARD_VENV"
        ng_say "recreating venv $ng_venv (made from another Python, or broken)"
        rm -rf -- "$ng_venv"
    else
        ng_say "creating venv $ng_venv"
    fi
    "$ng_base_python" -m venv "$ng_venv" || ng_die "could not create a venv with $ng_base_python"
}

# pip install ARGS..., skipped when the stamp NAME already records the same KEY.
ng_pip_stamped() {
    local name=$1 key=$2
    shift 2
    local stamp=$ng_venv/.netguard-$name.stamp
    if [[ -f $stamp && $(<"$stamp") == "$key" ]]; then
        return 0
    fi
    "$ng_python" -m pip install --quiet "$@" || ng_die "pip install $* failed"
    printf '%s\n' "$key" >"$stamp"
}

# The build requirements, read from pyproject.toml's [build-system] so they live in one place.
# netguard is built without build isolation: the venv already holds them, and re-runs stay
# fast and work offline.
ng_install_build_deps() {
    local key reqs
    key=$(sha256sum <"$ng_root/pyproject.toml")
    ng_pip_stamped toml "$key" 'tomli>=1.1; python_version < "3.11"'
    reqs=$("$ng_python" - "$ng_root/pyproject.toml" <<'PY'
import sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
PY
) || ng_die "cannot read [build-system] requires from pyproject.toml"
    local -a req_list
    mapfile -t req_list <<<"$reqs"
    ng_pip_stamped build-deps "$key" "${req_list[@]}"
}

ng_install_test_deps() {
    local key
    key=$(cat "$ng_root/requirements-test.txt" "$ng_root/pyproject.toml" | sha256sum)
    ng_pip_stamped test-deps "$key" -r "$ng_root/requirements-test.txt"
}

# Build flavour asked for through the environment (setup.py reads the same variables).
ng_flavour() {
    if ng_flag NETGUARD_SANITIZE; then
        echo "sanitize (ASan + UBSan, -O0 -g3, NG_DEBUG)"
    elif ng_flag NETGUARD_DEBUG; then
        echo "debug (-O0 -g3, NG_DEBUG)"
    else
        echo "release"
    fi
}

# Environment every process that loads the extension needs. An ASan-instrumented
# extension only loads when the ASan runtime is the first library of the process.
ng_runtime_env=()
ng_setup_runtime_env() {
    ng_runtime_env=()
    ng_flag NETGUARD_SANITIZE || return 0
    local asan
    asan=$(gcc -print-file-name=libasan.so 2>/dev/null) || asan=
    [[ $asan == /* && -e $asan ]] \
        || ng_die "NETGUARD_SANITIZE=1 needs gcc's ASan runtime (gcc -print-file-name=libasan.so found '${asan:-nothing}')"
    # CPython leaks at exit by design, so leak detection is off; ASan and UBSan stop at
    # the first error. PYTHONMALLOC=malloc sends Python's small objects to the system
    # allocator, where ASan can see overruns of the extension's objects. Options already
    # in the environment come last and win.
    ng_runtime_env=(
        "LD_PRELOAD=$asan${LD_PRELOAD:+:$LD_PRELOAD}"
        "ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
        "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
        "PYTHONMALLOC=malloc"
    )
}

# Build and install netguard (never editable) from a fresh copy of the build inputs, so
# the tests import the installed package, and objects that setuptools left in build/ by an
# earlier build with other flags can never be reused. No wheel cache either, for the same
# reason (pip caches wheels of directories whose name looks like NAME-VERSION).
ng_install_netguard() {
    local stage=$ng_venv/netguard_src item
    rm -rf -- "$stage"
    mkdir -p -- "$stage"
    for item in pyproject.toml setup.py setup.cfg MANIFEST.in README.md LICENSE src; do
        if [[ -e $ng_root/$item ]]; then
            cp -R -- "$ng_root/$item" "$stage/"
        fi
    done
    find "$stage" \( -name __pycache__ -o -name '*.egg-info' -o -name '*.so' -o -name build \) \
        -prune -exec rm -rf -- {} +
    ng_say "building and installing netguard: $(ng_flavour) build, warnings are errors"
    if ! NETGUARD_WERROR=1 "$ng_python" -m pip install --quiet --no-build-isolation \
        --no-cache-dir "$stage"; then
        ng_die "building or installing netguard failed (the compiler output is above)"
    fi
}

# Import the installed package and its C core, and say what was built. Fails when the
# package does not import, or when the extension is not the flavour that was asked for.
ng_describe_install() {
    local want_asan=0
    ng_flag NETGUARD_SANITIZE && want_asan=1
    env "${ng_runtime_env[@]}" "$ng_python" - "$want_asan" <<'PY' || ng_die "the installed netguard is not usable"
import importlib.metadata
import os
import platform
import sys

want_asan = sys.argv[1] == "1"
print(
    f"    python:   {sys.executable} ({platform.python_implementation()} "
    f"{platform.python_version()}, venv of {sys.base_prefix})"
)
try:
    import netguard
    from netguard import _netguard
except Exception as exc:  # show the real reason, then fail
    print(f"error: cannot import netguard and its C core: {exc!r}", file=sys.stderr)
    sys.exit(1)
print(f"    netguard: {importlib.metadata.version('netguard')} at {os.path.dirname(netguard.__file__)}")
with open(_netguard.__file__, "rb") as f:
    has_asan = b"__asan_init" in f.read()
print(f"    C core:   {_netguard.__file__} ({'with' if has_asan else 'without'} ASan)")
if hasattr(netguard, "implementation"):
    name, where = netguard.implementation()
    print(f"    in use:   {name} implementation ({where}); NETGUARD_IMPL={os.environ.get('NETGUARD_IMPL', '')!r}")
if has_asan != want_asan:
    print("error: the C core is not the build that was asked for", file=sys.stderr)
    sys.exit(1)
PY
}

ng_userns_help() {
    cat <<'TXT'
netguard's scripts and tests run in a private network namespace (`unshare -rn`), which
needs unprivileged user namespaces. Enable them, then retry:
  - Ubuntu 23.10 and later (AppArmor): sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
  - Debian before 11, some hardened kernels: sudo sysctl -w kernel.unprivileged_userns_clone=1
  - everywhere: user.max_user_namespaces must be above 0 (sysctl user.max_user_namespaces)
  - in a container: run it with user namespaces allowed (e.g. a seccomp profile that
    permits unshare/clone with CLONE_NEWUSER)
`unshare` itself comes with util-linux; `ip` with iproute2.
TXT
}

# Fail unless `unshare -rn` works here: called early, so a machine that cannot isolate the
# run is told so before a build, not after.
ng_check_netns() {
    command -v unshare >/dev/null 2>&1 || ng_die "unshare not found (util-linux)
$(ng_userns_help)"
    local probe
    if ! probe=$(unshare -rn -- "$BASH" -c : 2>&1); then
        ng_die "cannot create a network namespace: $probe
$(ng_userns_help)"
    fi
}

# Run CMD... in a fresh network namespace whose only interface is loopback, brought up:
# any packet for another address fails locally with ENETUNREACH. Returns CMD's status.
ng_in_netns() {
    ng_check_netns
    local lo_up
    if command -v ip >/dev/null 2>&1; then
        lo_up='ip link set lo up'
    else
        # Without iproute2, the test helper brings loopback up with an ioctl.
        lo_up=$(printf '%q %q --lo-up' "$ng_python" "$ng_root/tests/netns.py")
    fi
    # shellcheck disable=SC2016  # $1 and $@ belong to the inner shell
    unshare -rn -- "$BASH" -c '
        eval "$1" || { echo "error: could not bring up loopback in the namespace" >&2; exit 125; }
        shift
        export NETGUARD_TEST_NETNS=1
        exec "$@"' netns "$lo_up" "$@"
}
