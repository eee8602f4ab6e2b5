"""Every code block of the docs (docs/*.md and README.md) is checked, and every example runs.

What a block is, and how it is run, follows from its language and from a marker: an HTML
comment, the last line before the fence that is not blank (invisible on the site; in a
list item, leave a blank line between the two)::

    <!-- doctest: RUNNER [KEY=VALUE | FLAG] ... -->
    ```python
    ...
    ```

Values with spaces are quoted as in a shell. Runners:

``pytester``
    The block is a test file (``python``; ``file=NAME``, default ``test_example.py``) or
    the ini file (``ini``: ``pytest.ini``; ``toml``: ``pyproject.toml``) of a pytest run
    made through pytester, in a subprocess, with netguard loaded through its entry point.
``shell``
    Each line is a ``pytest`` command (``NAME=value`` assignments before it set the
    environment, ``#`` starts a comment), run the same way, one run per line, with the
    same files.
``python``
    The block runs as a script, ``python -c``, in a fresh interpreter.
``pycon``
    An interactive session, checked by ``doctest`` (the default for ``pycon`` blocks).
``config``
    Validated by netguard's configuration code (the default for ``ini``, ``toml``,
    ``yaml`` and ``json`` blocks, and done for every such block whatever its runner):
    ``netguard_*`` settings resolved as pytest would hand them over, ``filterwarnings``
    classes that must exist, allowlists loaded as files.
``skip reason="..."``
    Not run (installing, building, the scripts that run this suite). Few, and listed in
    ``SKIPPED`` below.

Blocks with no language are an error: output samples are ``text``, and are not run.
``python`` and ``sh`` blocks need a marker.

Options of ``pytester`` and ``shell``: ``mode=M`` (``--netguard-mode=M``), ``args="..."``
(more arguments), ``env="NAME=value"`` (repeatable), ``with=KIT[,KIT]`` (files and
imports from :data:`KITS`), ``files=NAME[,NAME]`` (blocks of the same page marked
``name=NAME``), ``ellipsis="CODE"`` (replaces every ``...`` statement of the block: the
body the example leaves out), ``netns`` (run in a private network namespace: for examples
whose calls reach outside loopback), ``requires=MODULE[,MODULE]``, and the expectations:
``outcome="passed=N failed=N ..."`` (as ``RunResult.assert_outcomes``), ``ret=N`` (the
exit status; without ``outcome`` or ``ret``, 0), ``match=PATTERN`` and
``nomatch=PATTERN`` (repeatable; fnmatch patterns against the output lines). A ``shell``
option ``KEY@N`` applies to the N-th command only, instead of ``KEY``.

Options of ``python``: ``with``, ``env``, ``netns``, ``requires``, ``match``,
``path=DIR`` (a directory of the repository put on ``PYTHONPATH``), ``listen=PORT`` (a TCP
listener on 127.0.0.1:PORT for the example to reach; needs ``netns``, where the port is
free), ``raises=NAME`` (the script ends with this exception; else it must succeed),
``stdout="..."`` (the exact output).

Any block may carry ``name=NAME`` to be used by others through ``files=NAME``.
"""

from __future__ import annotations

import configparser
import doctest
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import netguard
from netguard.config import OPTIONS, ConfigError, load_allowlist, resolve
from netns import run_isolated
from pluginrun import run, run_in_netns

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# Outside the source tree (scripts/wheels) there are no pages: the parameter lists are
# empty and the tests, all marked source_tree, are deselected there.
PAGES = [p for p in (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md") if p.is_file()]
DEMO = ROOT / "examples" / "suite"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_MARKER = re.compile(r"^[ \t]*<!--\s*doctest:(?P<spec>.*?)-->[ \t]*$")
_BY_INI = {o.ini: o for o in OPTIONS}

CONFIG_LANGUAGES = ("ini", "toml", "yaml", "json")
RUNNERS = {
    "pytester": {"mode", "args", "env", "with", "files", "ellipsis", "netns", "requires",
                 "outcome", "ret", "match", "nomatch", "file", "name"},
    "shell": {"mode", "args", "env", "with", "files", "netns", "requires", "outcome", "ret",
              "match", "nomatch", "name"},
    "python": {"with", "env", "netns", "requires", "match", "path", "listen", "raises",
               "stdout", "name"},
    "pycon": {"name"},
    "config": {"name"},
    "skip": {"reason", "name"},
}  # fmt: skip
RUN = ("pytester", "shell", "python", "pycon")

#: Blocks that are not run, by page and the start of their first line: keep this short.
SKIPPED = {
    ("README.md", "scripts/demo # builds and installs netgu"),
    ("docs/development.md", 'LD_PRELOAD="$(gcc -print-file-name=libas'),
    ("docs/development.md", "NETGUARD_SANITIZE=1 scripts/test"),
    ("docs/development.md", 'PY312="$(pyenv prefix 3.12.1)/bin/python'),
    ("docs/development.md", 'PYTHON="$(pyenv prefix 3.12.1)/bin/pytho'),
    ("docs/development.md", "cibuildwheel --platform linux --print-bu"),
    ("docs/development.md", "python3 -m venv /tmp/wf-venv"),
    ("docs/development.md", "scripts/test # the whole suite"),
    ("docs/development.md", "scripts/wheels # sdist + manylinux wheel"),
    ("docs/development.md", "unshare -rn sh -c 'ip link set lo up &&"),
    ("docs/migration.md", "@pytest.mark.enable_socket"),
    ("docs/quickstart.md", "python -m pip install ./netguard # the p"),
}


# --------------------------------------------------------------------------- blocks


@dataclass
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    text: str  # dedented
    runner: str | None = None
    options: dict[str, list[str]] = field(default_factory=dict)
    problem: str | None = None  # a marker that could not be read

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def start(self) -> str:
        """The start of the first line, spaces squeezed: how SKIPPED names a block."""
        return " ".join(self.text.split("\n", 1)[0].split())[:40].rstrip()

    def one(self, key: str, default: str | None = None) -> str | None:
        values = self.options.get(key)
        return values[-1] if values else default

    def many(self, key: str) -> list[str]:
        return [v for value in self.options.get(key, []) for v in value.split(",") if v]


def _parse_marker(spec: str) -> tuple[str, dict[str, list[str]]]:
    words = shlex.split(spec)
    if not words:
        raise ValueError("a marker names its runner")
    options: dict[str, list[str]] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        options.setdefault(key, []).append(value if sep else "")
    return words[0], options


def read_blocks(page: Path, root: Path = ROOT) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        indent = match.group("indent")
        body = "".join(
            row[len(indent) :] if row.startswith(indent) else row.lstrip(" \t")
            for row in match.group("body").splitlines(keepends=True)
        )
        block = Block(str(page.relative_to(root)), line, match.group("lang"), body)
        above = line - 2  # the last non-blank line before the fence
        while above >= 0 and not lines[above].strip():
            above -= 1
        marker = _MARKER.match(lines[above]) if above >= 0 else None
        if marker:
            try:
                block.runner, block.options = _parse_marker(marker.group("spec"))
            except ValueError as exc:
                block.problem = f"unreadable marker: {exc}"
        elif block.lang in CONFIG_LANGUAGES:
            block.runner = "config"
        elif block.lang == "pycon":
            block.runner = "pycon"
        found.append(block)
    return found


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def _params(blocks: list[Block]) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in blocks]


def _named(block: Block, name: str) -> Block:
    for other in BLOCKS:
        if other.page == block.page and name in other.many("name"):
            return other
    raise AssertionError(f"{block.id}: no block named {name!r} on {block.page}")


# --------------------------------------------------------------------------- kits

#: A small test that makes a call no small test may make (a UDP connect sends no packet).
BLOCKED_TEST = """
import socket

def test_blocked():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))
"""

#: probe(host, port): a UDP connect, which sends nothing.
PROBE = """
import socket

def probe(host="127.0.0.1", port=9):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as s:
        s.connect((host, port))
"""

#: A `server` fixture: a TCP server on loopback, which the fixture checks by connecting.
SERVER_CONFTEST = """
import socket

import pytest

@pytest.fixture
def server():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=5):
            listener.accept()[0].close()
        yield listener.getsockname()
"""

#: What api.md's examples call: code under test that makes one call to loopback.
CODE_UNDER_TEST = """
policy = netguard.Policy()

def warm_up_cache():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))

def run_code_under_test():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))
"""


@dataclass(frozen=True)
class Kit:
    files: dict[str, str] = field(default_factory=dict)
    prelude: str = ""


def _demo_files(*names: str) -> dict[str, str]:
    return {n: (DEMO / n).read_text(encoding="utf-8") for n in names if (DEMO / n).is_file()}


def _kits() -> dict[str, Kit]:
    demo_code = ("weather.py", "conftest.py", "pytest.ini")
    demo_tests = ("test_small.py", "test_medium.py", "test_large.py", "allowlist.toml")
    return {
        # examples/suite: the code under test, its fixtures and its settings ...
        "weather": Kit(_demo_files(*demo_code), "import pytest\n\nimport weather\n"),
        # ... and the whole demo suite
        "demo": Kit(_demo_files(*demo_code, *demo_tests)),
        "passing": Kit({"test_passing.py": "def test_passing():\n    pass\n"}),
        "blocked": Kit({"test_blocked.py": BLOCKED_TEST}),
        "probe": Kit({"docprobe.py": PROBE}, "from docprobe import probe\n"),
        "pytest": Kit(prelude="import pytest\n"),
        "server": Kit({"conftest.py": SERVER_CONFTEST}),
        "imports": Kit(prelude="import socket\n\nimport netguard\n"),
        "code_under_test": Kit(prelude=CODE_UNDER_TEST),
    }


KITS = _kits() if DEMO.is_dir() else {}


def _kits_of(block: Block) -> list[Kit]:
    return [KITS[name] for name in block.many("with")]


def _prelude(block: Block) -> str:
    return "".join(kit.prelude + "\n" for kit in _kits_of(block))


def _with_ellipsis(block: Block) -> str:
    code = block.one("ellipsis")
    if code is None:
        return block.text
    # `...` as a whole statement: a body on its own line, or after `def ...:` / `class:`
    statement = re.compile(r"(?m)(^[ \t]*|:[ \t]*)\.\.\.(?=[ \t]*(#.*)?$)")
    return statement.sub(lambda m: m[1] + code, block.text)


def _requires(block: Block) -> None:
    for module in block.many("requires"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{block.id} needs {module} (requirements-test.txt)")


# --------------------------------------------------------------------------- the checks


def _outcomes(text: str) -> dict[str, int]:
    return {key: int(value) for key, _, value in (w.partition("=") for w in text.split())}


def _check_run(block: Block, result: pytest.RunResult, suffix: str = "") -> None:
    def opt(key: str) -> str | None:
        return block.one(key + suffix, block.one(key))

    def opts(key: str) -> list[str]:
        return block.options.get(key + suffix, block.options.get(key, []))

    output = "\n".join(result.outlines + result.errlines)
    where = f"{block.id}{suffix}: the example did not do what the page says\n{output}"
    outcome, ret = opt("outcome"), opt("ret")
    if outcome is not None:
        try:
            result.assert_outcomes(**_outcomes(outcome))  # type: ignore[arg-type]
        except AssertionError as exc:
            raise AssertionError(f"{where}\n{exc}") from None
    if ret is not None or outcome is None:
        assert int(result.ret) == int(ret or 0), where
    lines = output.splitlines()
    for pattern in opts("match"):
        assert fnmatch.filter(lines, pattern), f"{where}\nno line matches {pattern!r}"
    for pattern in opts("nomatch"):
        assert not fnmatch.filter(lines, pattern), f"{where}\na line matches {pattern!r}"


def _write_files(block: Block, pytester: pytest.Pytester) -> None:
    files: dict[str, str] = {}
    for kit in _kits_of(block):
        files.update(kit.files)
    for name in block.many("files"):
        files[name] = _named(block, name).text
    if block.runner == "pytester":
        if block.lang == "python":
            text = _prelude(block) + _with_ellipsis(block)
            files[block.one("file", "test_example.py") or ""] = text
        else:
            files[{"ini": "pytest.ini", "toml": "pyproject.toml"}[block.lang]] = block.text
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _pytest(
    block: Block, pytester: pytest.Pytester, args: list[str], env: dict[str, str]
) -> pytest.RunResult:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        if block.one("netns") is not None:
            return run_in_netns(pytester, *args, all_plugins=True)
        return run(pytester, *args, all_plugins=True)


def _env(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def _common_args(block: Block) -> list[str]:
    args = [f"--netguard-mode={block.one('mode')}"] if block.one("mode") else []
    return args + shlex.split(block.one("args", "") or "")


def _commands(text: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """(environment, pytest arguments) of each command line of a shell block."""
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if not words:
            continue
        assert words[0] == "pytest", f"not a pytest command: {line!r}"
        yield env, words[1:]


def run_pytester_block(block: Block, pytester: pytest.Pytester) -> None:
    _write_files(block, pytester)
    result = _pytest(block, pytester, _common_args(block), _env(block.options.get("env", [])))
    _check_run(block, result)


def run_shell_block(block: Block, pytester: pytest.Pytester) -> None:
    _write_files(block, pytester)
    commands = list(_commands(block.text))
    assert commands, f"{block.id}: no pytest command"
    for n, (env, args) in enumerate(commands, 1):
        env = {**_env(block.options.get("env", [])), **env}
        result = _pytest(block, pytester, _common_args(block) + args, env)
        _check_run(block, result, f"@{n}")


def run_python_block(block: Block, tmp_path: Path) -> None:
    code = _prelude(block)
    if block.one("listen"):
        assert block.one("netns") is not None, f"{block.id}: listen= needs netns"
        ports = ", ".join(str(int(port)) for port in block.many("listen"))
        code += (
            "import socket as _socket\n"
            f"_listeners = [_socket.create_server(('127.0.0.1', p)) for p in ({ports},)]\n"
        )
    code += block.text
    env: dict[str, str | None] = dict(_env(block.options.get("env", [])))
    if block.one("path"):
        paths = [str(ROOT / p) for p in block.many("path")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])
    if block.one("netns") is not None:
        result = run_isolated(code, env=env)
    else:
        environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=environ,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    where = f"{block.id}: the example did not do what the page says\n{result.stderr}"
    raises = block.one("raises")
    if raises:
        # the exception line: the first unindented line after the last traceback's header
        _, _, traceback = result.stderr.rpartition("Traceback (most recent call last):\n")
        error = next((row for row in traceback.splitlines() if row[:1].strip()), "")
        assert result.returncode != 0 and re.match(rf"([\w.]+\.)?{raises}\b", error), where
    else:
        assert result.returncode == 0, where
    if block.one("stdout") is not None:
        assert result.stdout.strip() == block.one("stdout"), f"{where}\n{result.stdout}"
    lines = (result.stdout + result.stderr).splitlines()
    for pattern in block.options.get("match", []):
        assert fnmatch.filter(lines, pattern), f"{where}\nno line matches {pattern!r}"


def run_pycon_block(block: Block) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, {"netguard": netguard}, block.id, block.page, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


# --------------------------------------------------------------------------- the tests


@pytest.mark.source_tree
def test_every_block_is_accounted_for() -> None:
    problems = []
    for block in BLOCKS:
        if block.problem:
            problems.append(f"{block.id}: {block.problem}")
        elif not block.lang:
            problems.append(f"{block.id}: no language; an output sample is ```text")
        elif block.lang == "text":
            if block.runner is not None:
                problems.append(f"{block.id}: a text block is never run")
        elif block.runner is None:
            problems.append(f"{block.id}: a {block.lang} block needs a doctest marker")
        elif block.runner not in RUNNERS:
            problems.append(f"{block.id}: unknown runner {block.runner!r}")
        else:
            unknown = {k.split("@")[0] for k in block.options} - RUNNERS[block.runner]
            if unknown:
                problems.append(f"{block.id}: unknown options {sorted(unknown)}")
            missing = set(block.many("with")) - set(KITS)
            if missing:
                problems.append(f"{block.id}: unknown kits {sorted(missing)}")
            if block.runner == "skip" and not block.one("reason"):
                problems.append(f"{block.id}: a skip says why (reason=...)")
            if block.runner == "pytester" and block.lang not in ("python", "ini", "toml"):
                problems.append(f"{block.id}: pytester runs python, ini or toml blocks")
            if block.runner == "shell" and block.lang != "sh":
                problems.append(f"{block.id}: shell runs sh blocks")
            if block.runner in ("python", "pycon") and block.lang != block.runner:
                problems.append(f"{block.id}: the {block.runner} runner runs {block.runner}")
            if block.runner == "config" and block.lang not in CONFIG_LANGUAGES:
                problems.append(f"{block.id}: config checks {', '.join(CONFIG_LANGUAGES)}")
    assert problems == []


@pytest.mark.source_tree
def test_skipped_blocks_are_few_and_listed() -> None:
    skipped = {(b.page, b.start) for b in BLOCKS if b.runner == "skip"}
    assert skipped == SKIPPED
    assert len(skipped) <= 12


@pytest.mark.source_tree
@pytest.mark.usefixtures("clean_netguard_env")
@pytest.mark.parametrize("block", _params([b for b in BLOCKS if b.runner in RUN]))
def test_example(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    _requires(block)
    if block.runner == "pycon":
        run_pycon_block(block)
    elif block.runner == "python":
        run_python_block(block, tmp_path)
    else:
        pytester = request.getfixturevalue("pytester")
        if block.runner == "pytester":
            run_pytester_block(block, pytester)
        else:
            run_shell_block(block, pytester)


# --------------------------------------------------------------------------- config


def _resolve_ini(values: dict[str, object], tmp_path: Path) -> None:
    """Resolve ``netguard_*`` ini values the way the plugin does; unknown keys fail."""
    ini: dict[str, object] = {}
    for key, value in values.items():
        if not key.startswith("netguard_"):
            continue
        assert key in _BY_INI, f"unknown setting {key!r}"
        opt = _BY_INI[key]
        if opt.ini_type == "linelist" and isinstance(value, str):
            value = [line.strip() for line in value.splitlines() if line.strip()]
        if opt.kind == "path" and isinstance(value, str):
            target = tmp_path / value
            target.parent.mkdir(parents=True, exist_ok=True)
            if opt.name == "allowlist":
                target.write_text("version = 1\nallowlist = []\n", encoding="utf-8")
        ini[opt.name] = value
    resolve({}, {}, ini, rootdir=tmp_path, inifile=tmp_path / "pytest.ini", cwd=tmp_path)


def _check_filterwarnings(value: object) -> None:
    lines = value.splitlines() if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    for line in (entry.strip() for entry in lines):
        if not line:
            continue
        parts = line.split(":")
        category = parts[2] if len(parts) > 2 else ""
        if "." in category:
            module, _, name = category.rpartition(".")
            assert hasattr(importlib.import_module(module), name), f"no warning {category!r}"


def _check_pytest_settings(values: dict[str, object], tmp_path: Path) -> None:
    _resolve_ini(values, tmp_path)
    if "filterwarnings" in values:
        _check_filterwarnings(values["filterwarnings"])


def _config(lang: str) -> list[Any]:
    return _params([b for b in BLOCKS if b.lang == lang])


@pytest.mark.source_tree
@pytest.mark.parametrize("block", _config("ini"))
def test_ini_blocks(block: Block, tmp_path: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(block.text)
    if parser.has_section("pytest"):
        _check_pytest_settings(dict(parser["pytest"]), tmp_path)


@pytest.mark.source_tree
@pytest.mark.parametrize("block", _config("toml"))
def test_toml_blocks(block: Block, tmp_path: Path) -> None:
    data = tomllib.loads(block.text)
    settings = data.get("tool", {}).get("pytest", {}).get("ini_options")
    if settings is not None:
        _check_pytest_settings(settings, tmp_path)
    if "allowlist" in data:
        path = tmp_path / "allowlist.toml"
        path.write_text(block.text, encoding="utf-8")
        assert load_allowlist(path) is not None


@pytest.mark.source_tree
@pytest.mark.parametrize("block", _config("yaml"))
def test_yaml_blocks(block: Block, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "allowlist" in data:
        path = tmp_path / "allowlist.yaml"
        path.write_text(block.text, encoding="utf-8")
        assert load_allowlist(path) is not None


@pytest.mark.source_tree
@pytest.mark.parametrize("block", _config("json"))
def test_json_blocks(block: Block) -> None:
    json.loads(block.text)


@pytest.mark.source_tree
@pytest.mark.parametrize("block", _config("python"))
def test_python_blocks_compile(block: Block) -> None:
    compile(block.text, block.id, "exec")


# --------------------------------------------------------------------------- the checks fail


@pytest.mark.source_tree
def test_the_checks_find_mistakes(tmp_path: Path) -> None:
    # a misspelt key and a bad value in a page would fail
    with pytest.raises(AssertionError, match="unknown setting 'netguard_modes'"):
        _check_pytest_settings({"netguard_modes": "strict"}, tmp_path)
    with pytest.raises(ConfigError, match="netguard_mode='strct'"):
        _check_pytest_settings({"netguard_mode": "strct"}, tmp_path)
    with pytest.raises(AssertionError, match="no warning"):
        _check_filterwarnings("error::netguard.NoSuchWarning")
    assert len(PAGES) >= 10  # in the source tree, every page is read
    runners = [b.runner for b in BLOCKS]
    assert runners.count("pytester") >= 15 and runners.count("shell") >= 8
    assert runners.count("python") >= 5 and runners.count("pycon") >= 2


def _page(tmp_path: Path, text: str) -> Block:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text), encoding="utf-8")
    (block,) = read_blocks(page, tmp_path)
    return block


@pytest.mark.source_tree
@pytest.mark.usefixtures("clean_netguard_env")
def test_a_wrong_claim_fails(pytester: pytest.Pytester, tmp_path: Path) -> None:
    example = """
        <!-- doctest: pytester mode=strict outcome="passed=1" -->
        ```python
        import socket

        def test_connects():
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("127.0.0.1", 9))
        ```
    """
    block = _page(tmp_path, example)
    assert (block.runner, block.one("mode"), block.line) == ("pytester", "strict", 3)
    with pytest.raises(AssertionError, match="did not do what the page says"):
        run_pytester_block(block, pytester)
    block.options["outcome"] = ["failed=1"]
    block.options["match"] = ["*NG001*"]
    run_pytester_block(block, pytester)  # what strict mode really does
    block.options["match"] = ["*NG002*"]
    with pytest.raises(AssertionError, match="no line matches"):
        run_pytester_block(block, pytester)


@pytest.mark.source_tree
def test_a_wrong_python_example_fails(tmp_path: Path) -> None:
    block = _page(
        tmp_path,
        """
        <!-- doctest: python stdout="3" -->
        ```python
        print(1 + 1)
        ```
        """,
    )
    with pytest.raises(AssertionError, match="did not do what the page says"):
        run_python_block(block, tmp_path)
    block.options["stdout"] = ["2"]
    run_python_block(block, tmp_path)
    block.options["raises"] = ["ZeroDivisionError"]
    with pytest.raises(AssertionError, match="did not do what the page says"):
        run_python_block(block, tmp_path)


@pytest.mark.source_tree
def test_ellipsis_fills_the_bodies_an_example_leaves_out() -> None:
    block = Block("x.md", 1, "python", "def a(): ...\n\ndef b():\n    ...  # later\nx = f(...)\n")
    block.options["ellipsis"] = ["probe()"]
    assert _with_ellipsis(block) == (
        "def a(): probe()\n\ndef b():\n    probe()  # later\nx = f(...)\n"
    )


@pytest.mark.source_tree
def test_blocks_in_list_items(tmp_path: Path) -> None:
    # indented under a list item, the marker a blank line above: the block is dedented,
    # its blank lines kept
    block = _page(
        tmp_path,
        """
        - an item:

            <!-- doctest: python stdout="a b" -->

            ```python
            x = "a"

            print(x, "b")
            ```
        """,
    )
    assert (block.runner, block.lang) == ("python", "python")
    assert block.text == 'x = "a"\n\nprint(x, "b")\n'
    run_python_block(block, tmp_path)
