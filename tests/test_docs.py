"""The code blocks of the docs (docs/*.md and README.md) are checked, not just shown.

- ``ini`` and ``toml`` blocks: parsed; their ``netguard_*`` settings (``[pytest]``,
  ``[tool.pytest.ini_options]``) resolved by netguard's own configuration code, as pytest
  would hand them over, so a misspelt key, a bad value or a bad rule in a page fails here;
  their ``filterwarnings`` entries must name a warning class that exists. An allowlist
  (``version``/``allowlist``) is loaded as a file.
- ``yaml`` blocks: loaded as allowlist files when they are allowlists, parsed otherwise.
- ``json`` blocks: parsed. ``python`` blocks: compiled.
"""

from __future__ import annotations

import configparser
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from netguard.config import OPTIONS, ConfigError, load_allowlist, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# Outside the source tree (scripts/wheels) there are no pages: the parameter lists are
# empty and the tests, all marked source_tree, are deselected there.
PAGES = [p for p in (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md") if p.is_file()]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_BY_INI = {o.ini: o for o in OPTIONS}


def _blocks(language: str) -> list[Any]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                name = f"{page.relative_to(ROOT)}:{line}"
                found.append(pytest.param(match.group(2), id=name))
    return found


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


@pytest.mark.source_tree
@pytest.mark.parametrize("text", _blocks("ini"))
def test_ini_blocks(text: str, tmp_path: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if parser.has_section("pytest"):
        _check_pytest_settings(dict(parser["pytest"]), tmp_path)


@pytest.mark.source_tree
@pytest.mark.parametrize("text", _blocks("toml"))
def test_toml_blocks(text: str, tmp_path: Path) -> None:
    data = tomllib.loads(text)
    settings = data.get("tool", {}).get("pytest", {}).get("ini_options")
    if settings is not None:
        _check_pytest_settings(settings, tmp_path)
    if "allowlist" in data:
        path = tmp_path / "allowlist.toml"
        path.write_text(text, encoding="utf-8")
        assert load_allowlist(path) is not None


@pytest.mark.source_tree
@pytest.mark.parametrize("text", _blocks("yaml"))
def test_yaml_blocks(text: str, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "allowlist" in data:
        path = tmp_path / "allowlist.yaml"
        path.write_text(text, encoding="utf-8")
        assert load_allowlist(path) is not None


@pytest.mark.source_tree
@pytest.mark.parametrize("text", _blocks("json"))
def test_json_blocks(text: str) -> None:
    json.loads(text)


@pytest.mark.source_tree
@pytest.mark.parametrize("text", _blocks("python"))
def test_python_blocks_compile(text: str) -> None:
    compile(text, "<docs>", "exec")


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
    assert len(_blocks("ini")) >= 5 and len(_blocks("python")) >= 10
