"""Tests for netguard.config: the options table, resolution, allowlist files, the docs page.

Everything here calls netguard.config directly (the plugin's pytester tests come with the
plugin). YAML allowlists: the schema checks run on parsed data everywhere; reading real
.yaml files needs PyYAML, so those tests assert the real result where PyYAML is installed
and the "pip install netguard[yaml]" error where it is not -- never a skip.
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netguard import config
from netguard.config import (
    OPTIONS,
    ConfigError,
    Option,
    Settings,
    allowlist_from_data,
    load_allowlist,
    option,
    parse_bool,
    resolve,
    split_rules,
)
from netguard.rules import Rule, RuleError, parse_rule

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
HAVE_YAML = importlib.util.find_spec("yaml") is not None
YAML_MISSING = (
    "{file}: reading a YAML allowlist needs PyYAML: pip install netguard[yaml] "
    "(or write the allowlist in TOML)"
)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(rootdir, cwd): two different directories, so relative paths show which was used."""
    root = tmp_path / "root"
    cwd = tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()
    return root, cwd


def run(
    dirs: tuple[Path, Path],
    cli: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    ini: dict[str, object] | None = None,
    *,
    inifile: str | None = "pytest.ini",
) -> Settings:
    root, cwd = dirs
    return resolve(
        cli or {},
        env or {},
        ini or {},
        rootdir=root,
        inifile=None if inifile is None else root / inifile,
        cwd=cwd,
    )


def error_of(func: Callable[[], object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        func()
    return info.value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the table


def test_options_are_the_rows_of_issue_3() -> None:
    assert [o.name for o in OPTIONS] == [
        "mode",
        "default_size",
        "allow",
        "allowlist",
        "report",
        "verbose",
        "native",  # issue 4
        "database_safety",  # issue 6
        "database_safety_vars",
        "database_safety_hosts",
        "database_safety_prefix",
    ]


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_option_names_follow_one_convention(opt: Option) -> None:
    assert opt.name.isidentifier() and opt.name == opt.name.lower()
    assert opt.dest == opt.ini  # argparse stores the flag under the ini key's name
    assert opt.ini_type in ("string", "linelist", "bool", "args")
    assert opt.kind in ("choice", "rules", "path", "bool", "names", "text")
    assert (opt.pattern is not None) == bool(opt.expected) == (opt.kind in ("names", "text"))
    assert opt.help and opt.help.endswith(".")
    assert option(opt.name) is opt
    assert bool(opt.choices) == (opt.kind == "choice")
    assert opt.repeatable == (opt.kind in ("rules", "names"))
    # Settings() holds the same defaults as the table.
    assert getattr(Settings(), opt.name if opt.name != "allow" else "allow_rules") == opt.default
    assert Settings().source_of(opt.name) == "default"


def test_option_details() -> None:
    assert option("mode").choices == ("strict", "warn", "off")
    assert option("mode").default == "off"
    assert option("default_size").choices == ("small", "medium", "large", "xlarge")
    assert option("default_size").default == "small"
    assert option("allow").ini_type == "linelist"
    assert option("verbose").ini_type == "string"  # parsed by netguard, naming the key
    assert option("verbose").default is False
    assert [option(n).default_text for n in ("mode", "allow", "report", "verbose")] == [
        "off",
        "none",
        "none",
        "false",
    ]
    assert option("native").kind == "bool"
    assert option("native").ini_type == "string"  # parsed by netguard, naming the key
    assert option("native").default is False
    assert (option("native").flag, option("native").env, option("native").ini) == (
        "--netguard-native",
        "NETGUARD_NATIVE",
        "netguard_native",
    )
    with pytest.raises(KeyError):
        option("impl")
    with pytest.raises(AttributeError, match="frozen"):
        option("mode").default = "strict"  # type: ignore[misc]


def test_addoption_and_addini_kwargs() -> None:
    kwargs = {o.name: o.addoption_kwargs() for o in OPTIONS}
    assert kwargs["allow"]["action"] == "append"
    assert kwargs["verbose"]["action"] == "store_true"
    assert kwargs["mode"]["action"] == "store"
    assert "choices" not in kwargs["mode"]  # one sourced message for every source
    assert all(k["default"] is None for k in kwargs.values())
    assert all(k["dest"] == option(name).dest for name, k in kwargs.items())
    for opt in OPTIONS:
        ini = opt.addini_kwargs()
        assert ini == {"help": opt.help, "type": opt.ini_type, "default": None}


def test_cli_help_names_the_other_sources() -> None:
    text = option("mode").cli_help()
    assert text.endswith("[env NETGUARD_MODE, ini netguard_mode; default: off]")
    weird = option("report").replace(help="100% of events.")
    assert weird.cli_help().startswith("100%% of events.")


def test_argparse_end_to_end(dirs: tuple[Path, Path]) -> None:
    """The table registers working flags whose values resolve() reads."""
    parser = argparse.ArgumentParser()
    for opt in OPTIONS:
        parser.add_argument(opt.flag, **opt.addoption_kwargs())
    ns = parser.parse_args([])
    settings = run(dirs, {o.name: getattr(ns, o.dest) for o in OPTIONS})
    assert settings == Settings()
    ns = parser.parse_args(
        [
            "--netguard-mode=warn",
            "--netguard-allow=192.0.2.1:443",
            "--netguard-allow",
            "unix:/run/*.sock",
            "--netguard-verbose",
            "--netguard-report=r.json",
        ]
    )
    settings = run(dirs, {o.name: getattr(ns, o.dest) for o in OPTIONS})
    assert settings.mode == "warn"
    assert [str(r) for r in settings.allow_rules] == ["192.0.2.1:443", "unix:/run/*.sock"]
    assert settings.verbose is True
    assert settings.report == dirs[1] / "r.json"


def test_settings_is_frozen_with_slots() -> None:
    s = Settings()
    assert not hasattr(s, "__dict__")
    with pytest.raises(AttributeError, match="frozen"):
        s.mode = "strict"  # type: ignore[misc]
    with pytest.raises(KeyError):
        s.source_of("impl")
    assert hash(s) == hash(Settings())


def test_resolve_rejects_unknown_option_names(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(TypeError, match="unknown option names in cli: netguard_mode"):
        run(dirs, {"netguard_mode": "strict"})
    with pytest.raises(TypeError, match="unknown option names in ini: impl"):
        run(dirs, ini={"impl": "c"})


# --------------------------------------------------------------------------- each source

# name -> (cli value, env value, ini value, expected setting)
ROW_VALUES: dict[str, tuple[object, str, object, object]] = {
    "mode": ("strict", "strict", "strict", "strict"),
    "default_size": ("medium", "medium", "medium", "medium"),
    "verbose": (True, "yes", True, True),
    "native": (True, "1", "yes", True),
    "database_safety": (True, "on", "true", True),
    "database_safety_vars": (
        ["PG_URL", "*_DSN"],
        "PG_URL, *_DSN",
        ["PG_URL", "*_DSN PG_URL"],
        ("PG_URL", "*_DSN"),
    ),
    "database_safety_hosts": (
        ["pg-ci", "mysql.ci"],
        "pg-ci mysql.ci",
        ["pg-ci,mysql.ci"],
        ("pg-ci", "mysql.ci"),
    ),
    "database_safety_prefix": ("ci_", " ci_ ", "ci_", "ci_"),
}


@pytest.mark.parametrize("source", ["cli", "env", "ini"])
@pytest.mark.parametrize("name", list(ROW_VALUES))
def test_each_row_from_each_source(dirs: tuple[Path, Path], name: str, source: str) -> None:
    opt = option(name)
    cli_value, env_value, ini_value, expected = ROW_VALUES[name]
    if source == "cli":
        settings = run(dirs, cli={name: cli_value})
        label = f"command line {opt.flag}"
    elif source == "env":
        settings = run(dirs, env={opt.env: env_value})
        label = f"environment {opt.env}"
    else:
        settings = run(dirs, ini={name: ini_value})
        label = f"ini {opt.ini} in pytest.ini"
    assert getattr(settings, name) == expected
    assert settings.source_of(name) == label
    assert getattr(settings, name + "_source") == label
    # every other setting kept its default
    for other in OPTIONS:
        if other.name != name:
            assert settings.source_of(other.name) == "default"


@pytest.mark.parametrize("name", ["mode", "default_size"])
@pytest.mark.parametrize("source", ["cli", "env", "ini"])
def test_every_choice_from_every_source(dirs: tuple[Path, Path], name: str, source: str) -> None:
    opt = option(name)
    for choice in opt.choices:
        for written in (choice, choice.upper(), f"  {choice.title()} "):
            if source == "cli":
                settings = run(dirs, cli={name: written})
            elif source == "env":
                settings = run(dirs, env={opt.env: written})
            else:
                settings = run(dirs, ini={name: written})
            assert getattr(settings, name) == choice


@pytest.mark.parametrize("source", ["env", "ini"])
@pytest.mark.parametrize(
    ("word", "value"),
    [
        *[(w, True) for w in ("1", "true", "yes", "on", "TRUE", "Yes", " On ")],
        *[(w, False) for w in ("0", "false", "no", "off", "FALSE", "No", "oFF\n")],
    ],
)
def test_booleans(dirs: tuple[Path, Path], source: str, word: str, value: bool) -> None:
    if source == "env":
        settings = run(dirs, env={"NETGUARD_VERBOSE": word})
    else:
        settings = run(dirs, ini={"verbose": word})
    assert settings.verbose is value
    assert parse_bool(word) is value


@pytest.mark.parametrize("source", ["cli", "env", "ini"])
@pytest.mark.parametrize(("word", "value"), [("1", True), ("On", True), ("no", False)])
def test_native_from_each_source(
    dirs: tuple[Path, Path], source: str, word: str, value: bool
) -> None:
    if source == "cli":
        # the flag is store_true: given means on, absent means the lower sources decide
        settings = run(dirs, cli={"native": True}, env={"NETGUARD_NATIVE": "0"})
        assert (settings.native, settings.native_source) == (
            True,
            "command line --netguard-native",
        )
        return
    if source == "env":
        settings = run(dirs, env={"NETGUARD_NATIVE": word}, ini={"native": "maybe-not-read"})
        assert settings.native_source == "environment NETGUARD_NATIVE"
    else:
        settings = run(dirs, ini={"native": word})
        assert settings.native_source == "ini netguard_native in pytest.ini"
    assert settings.native is value
    assert run(dirs).native is False


@pytest.mark.parametrize(
    ("source", "name", "value", "message"),
    [
        ("env", "database_safety", "maybe", "NETGUARD_DATABASE_SAFETY='maybe' from the "
         "environment: expected one of 1, 0, true, false"),
        ("ini", "database_safety", "2", "netguard_database_safety='2' from pytest.ini: "
         "expected one of"),
        ("env", "database_safety_vars", "DB URL;", "NETGUARD_DATABASE_SAFETY_VARS='DB URL;' "
         "from the environment: 'URL;' is not valid: expected environment variable names"),
        ("ini", "database_safety_vars", ["A", "B=C"], "netguard_database_safety_vars="
         "['A', 'B=C'] from pytest.ini: 'B=C' is not valid"),
        ("cli", "database_safety_hosts", ["db:5432"], "--netguard-database-safety-hosts="
         "['db:5432'] from the command line: 'db:5432' is not valid: expected host names"),
        ("env", "database_safety_hosts", "db, pg/1", "NETGUARD_DATABASE_SAFETY_HOSTS="
         "'db, pg/1' from the environment: 'pg/1' is not valid"),
        ("cli", "database_safety_prefix", "", "--netguard-database-safety-prefix='' from "
         "the command line: expected a non-empty prefix"),
        ("env", "database_safety_prefix", "a b", "NETGUARD_DATABASE_SAFETY_PREFIX='a b' from "
         "the environment: expected a non-empty prefix"),
        ("ini", "database_safety_prefix", "x/", "netguard_database_safety_prefix='x/' from "
         "pytest.ini: 'x/' is not valid"),
    ],
)  # fmt: skip
def test_database_safety_bad_values(
    dirs: tuple[Path, Path], source: str, name: str, value: object, message: str
) -> None:
    opt = option(name)
    if source == "cli":
        err = error_of(lambda: run(dirs, cli={name: value}))
    elif source == "env":
        err = error_of(lambda: run(dirs, env={opt.env: str(value)}))
    else:
        err = error_of(lambda: run(dirs, ini={name: value}))
    assert str(err).startswith(message), str(err)
    assert err.source.endswith(
        opt.flag if source == "cli" else opt.env if source == "env" else "pytest.ini"
    )


def test_database_safety_lists_can_be_emptied_from_the_command_line(
    dirs: tuple[Path, Path],
) -> None:
    settings = run(
        dirs, cli={"database_safety_vars": [""]}, env={"NETGUARD_DATABASE_SAFETY_VARS": "X"}
    )
    assert settings.database_safety_vars == ()
    assert settings.database_safety_vars_source == "command line --netguard-database-safety-vars"


def test_boolean_values_from_cli_and_toml(dirs: tuple[Path, Path]) -> None:
    assert run(dirs, cli={"verbose": True}).verbose is True
    assert run(dirs, cli={"verbose": False}).verbose is False
    assert run(dirs, ini={"verbose": False}).verbose_source == "ini netguard_verbose in pytest.ini"
    assert parse_bool("maybe") is None
    assert parse_bool("") is None


def test_allow_from_each_source(dirs: tuple[Path, Path]) -> None:
    settings = run(dirs, cli={"allow": ["192.0.2.1:443", "2001:db8::/32"]})
    assert [r.source for r in settings.allow_rules] == [
        "--netguard-allow[1]",
        "--netguard-allow[2]",
    ]
    assert settings.allow_source == "command line --netguard-allow"

    settings = run(dirs, env={"NETGUARD_ALLOW": "api.example.com:80,443, 10.0.0.0/8 unix:@x"})
    assert [(str(r), r.source) for r in settings.allow_rules] == [
        ("api.example.com:80,443", "NETGUARD_ALLOW[1]"),
        ("10.0.0.0/8", "NETGUARD_ALLOW[2]"),
        ("unix:@x", "NETGUARD_ALLOW[3]"),
    ]
    assert settings.allow_source == "environment NETGUARD_ALLOW"

    settings = run(dirs, ini={"allow": ["10.0.0.0/8:5432", "*.internal.example:443 ::1"]})
    assert [(str(r), r.source) for r in settings.allow_rules] == [
        ("10.0.0.0/8:5432", "netguard_allow[1] in pytest.ini"),
        ("*.internal.example:443", "netguard_allow[2] in pytest.ini"),
        ("::1", "netguard_allow[3] in pytest.ini"),
    ]
    assert settings.allow_source == "ini netguard_allow in pytest.ini"
    assert all(r.name is None for r in settings.allow_rules)


def test_allow_rules_equal_the_grammars(dirs: tuple[Path, Path]) -> None:
    settings = run(dirs, env={"NETGUARD_ALLOW": "[2001:db8::1]:443,8443"})
    assert settings.allow_rules == (
        parse_rule("[2001:db8::1]:443,8443", source="NETGUARD_ALLOW[1]"),
    )


def test_allow_values_of_other_shapes(dirs: tuple[Path, Path]) -> None:
    # a single string (a flag stored without append, an ini "string") and a tuple
    assert len(run(dirs, cli={"allow": "192.0.2.1, 192.0.2.2"}).allow_rules) == 2
    assert len(run(dirs, ini={"allow": ("192.0.2.1", "192.0.2.2")}).allow_rules) == 2
    assert len(run(dirs, ini={"allow": "192.0.2.1\n192.0.2.2\n"}).allow_rules) == 2


def test_ini_source_without_an_inifile(dirs: tuple[Path, Path]) -> None:
    settings = run(dirs, ini={"mode": "warn", "allow": ["192.0.2.1"]}, inifile=None)
    assert settings.mode_source == "ini netguard_mode"
    assert settings.allow_rules[0].source == "netguard_allow[1]"
    settings = run(dirs, ini={"mode": "warn"}, inifile="pyproject.toml")
    assert settings.mode_source == "ini netguard_mode in pyproject.toml"


def test_inifile_outside_rootdir_is_shown_absolute(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    settings = resolve({}, {}, {"mode": "warn"}, rootdir=root, inifile=tmp_path / "tox.ini")
    assert settings.mode_source == f"ini netguard_mode in {tmp_path / 'tox.ini'}"


# --------------------------------------------------------------------------- paths


def test_paths_from_each_source(dirs: tuple[Path, Path]) -> None:
    root, cwd = dirs
    write(root / "lists/allow.toml", "version = 1\nallowlist = []\n")
    write(cwd / "lists/allow.toml", "version = 1\nallowlist = []\n")

    s = run(dirs, ini={"allowlist": "lists/allow.toml", "report": "out/report.json"})
    assert (s.allowlist, s.report) == (root / "lists/allow.toml", root / "out/report.json")
    assert s.allowlist_source == "ini netguard_allowlist in pytest.ini"
    assert s.report_source == "ini netguard_report in pytest.ini"

    s = run(dirs, env={"NETGUARD_ALLOWLIST": "lists/allow.toml", "NETGUARD_REPORT": "r.json"})
    assert (s.allowlist, s.report) == (cwd / "lists/allow.toml", cwd / "r.json")
    assert s.allowlist_source == "environment NETGUARD_ALLOWLIST"

    s = run(dirs, cli={"allowlist": "lists/allow.toml", "report": "r.json"})
    assert (s.allowlist, s.report) == (cwd / "lists/allow.toml", cwd / "r.json")
    assert s.report_source == "command line --netguard-report"

    absolute = root / "lists/allow.toml"
    s = run(dirs, cli={"allowlist": str(absolute)}, ini={"report": Path("/abs/r.json")})
    assert s.allowlist == absolute
    assert s.report == Path("/abs/r.json")


def test_cwd_defaults_to_the_current_directory(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cwd = dirs
    monkeypatch.chdir(cwd)
    settings = resolve({"report": "r.json"}, {}, {}, rootdir=root)
    assert settings.report == cwd / "r.json"


def test_empty_cli_value_clears_a_path_or_the_rules(dirs: tuple[Path, Path]) -> None:
    root, _ = dirs
    write(root / "allow.toml", 'version = 1\n[[allowlist]]\nname = "a"\nhost = "a.example"\n')
    ini: dict[str, object] = {
        "allowlist": "allow.toml",
        "report": "r.json",
        "allow": ["192.0.2.1"],
    }
    s = run(dirs, ini=ini)
    assert len(s.allow_rules) == 2
    s = run(dirs, cli={"allowlist": "", "report": "", "allow": [""]}, ini=ini)
    assert (s.allowlist, s.report, s.allow_rules) == (None, None, ())
    assert s.allowlist_source == "command line --netguard-allowlist"
    assert s.report_source == "command line --netguard-report"
    assert s.allow_source == "command line --netguard-allow"


def test_env_without_rules_clears_the_ini_rules(dirs: tuple[Path, Path]) -> None:
    s = run(dirs, env={"NETGUARD_ALLOW": ","}, ini={"allow": ["192.0.2.1"]})
    assert s.allow_rules == ()
    assert s.allow_source == "environment NETGUARD_ALLOW"


# --------------------------------------------------------------------------- precedence

PRECEDENCE: dict[str, tuple[object, str, object]] = {
    # name: (cli, env, ini) values, all different
    "mode": ("strict", "warn", "off"),
    "default_size": ("large", "medium", "xlarge"),
    "allow": (["192.0.2.1"], "192.0.2.2", ["192.0.2.3"]),
    "allowlist": ("cli.toml", "env.toml", "ini.toml"),
    "report": ("cli.json", "env.json", "ini.json"),
    "verbose": (True, "false", True),
    "native": (True, "off", "yes"),
}
SUBSETS = [
    frozenset(s)
    for s in (
        (),
        ("cli",),
        ("env",),
        ("ini",),
        ("cli", "env"),
        ("cli", "ini"),
        ("env", "ini"),
        ("cli", "env", "ini"),
    )
]


def _value_of(settings: Settings, name: str) -> object:
    if name == "allow":
        return [str(r) for r in settings.allow_rules if r.name is None]
    if name in ("allowlist", "report"):
        value = getattr(settings, name)
        return None if value is None else value.name
    return getattr(settings, name)


@pytest.mark.parametrize("given", SUBSETS, ids=lambda s: "+".join(sorted(s)) or "none")
@pytest.mark.parametrize("name", list(PRECEDENCE))
def test_precedence(dirs: tuple[Path, Path], name: str, given: frozenset[str]) -> None:
    root, cwd = dirs
    for directory in (root, cwd):
        for stem in ("cli", "env", "ini"):
            write(directory / f"{stem}.toml", "version = 1\nallowlist = []\n")
    opt = option(name)
    cli_value, env_value, ini_value = PRECEDENCE[name]
    settings = run(
        dirs,
        cli={name: cli_value} if "cli" in given else {},
        env={opt.env: env_value} if "env" in given else {},
        ini={name: ini_value} if "ini" in given else {},
    )
    expected_settings = {
        "cli": run(dirs, cli={name: cli_value}),
        "env": run(dirs, env={opt.env: env_value}),
        "ini": run(dirs, ini={name: ini_value}),
        "default": Settings(),
    }
    winner = next((s for s in ("cli", "env", "ini") if s in given), "default")
    assert _value_of(settings, name) == _value_of(expected_settings[winner], name)
    assert settings.source_of(name) == expected_settings[winner].source_of(name)
    assert (
        settings.source_of(name)
        == {
            "cli": f"command line {opt.flag}",
            "env": f"environment {opt.env}",
            "ini": f"ini {opt.ini} in pytest.ini",
            "default": "default",
        }[winner]
    )


def test_precedence_is_per_option(dirs: tuple[Path, Path]) -> None:
    s = run(
        dirs,
        cli={"mode": "strict"},
        env={"NETGUARD_DEFAULT_SIZE": "medium", "NETGUARD_MODE": "warn"},
        ini={"default_size": "large", "verbose": "on", "mode": "off"},
    )
    assert (s.mode, s.default_size, s.verbose) == ("strict", "medium", True)
    assert s.mode_source == "command line --netguard-mode"
    assert s.default_size_source == "environment NETGUARD_DEFAULT_SIZE"
    assert s.verbose_source == "ini netguard_verbose in pytest.ini"


def test_lower_sources_are_not_read(dirs: tuple[Path, Path]) -> None:
    # An invalid value in a lower source is ignored when a higher one gives a value.
    s = run(dirs, cli={"mode": "warn"}, env={"NETGUARD_MODE": "bogus"}, ini={"mode": "x"})
    assert s.mode == "warn"
    s = run(dirs, env={"NETGUARD_ALLOW": "192.0.2.1"}, ini={"allow": ["not a/rule"]})
    assert [str(r) for r in s.allow_rules] == ["192.0.2.1"]


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_env_is_unset(dirs: tuple[Path, Path], blank: str) -> None:
    env = {o.env: blank for o in OPTIONS}
    assert run(dirs, env=env) == Settings()
    s = run(dirs, env=env, ini={"mode": "warn", "allow": ["192.0.2.1"]})
    assert s.mode_source == "ini netguard_mode in pytest.ini"
    assert s.allow_source == "ini netguard_allow in pytest.ini"


def test_empty_ini_values_are_unset(dirs: tuple[Path, Path]) -> None:
    ini: dict[str, object] = {
        "mode": "",
        "default_size": None,
        "allow": [],
        "allowlist": "",
        "report": "  ",
        "verbose": None,
    }
    assert run(dirs, ini=ini) == Settings()
    assert run(dirs, cli={o.name: None for o in OPTIONS}) == Settings()
    assert run(dirs, cli={"allow": []}) == Settings()


def test_other_environment_variables_are_ignored(dirs: tuple[Path, Path]) -> None:
    env = {"NETGUARD_IMPL": "python", "NETGUARD_NATIVES": "1", "NETGUARD_MDOE": "strict"}
    assert run(dirs, env=env) == Settings()


# --------------------------------------------------------------------------- bad values

# (cli, env, ini, the exact message); "{root}" and "{cwd}" are the test's directories.
BAD: list[tuple[dict[str, object], dict[str, str], dict[str, object], str]] = [
    # modes
    (
        {},
        {"NETGUARD_MODE": "strictt"},
        {},
        "NETGUARD_MODE='strictt' from the environment: expected strict, warn or off",
    ),
    (
        {"mode": "fast"},
        {},
        {},
        "--netguard-mode='fast' from the command line: expected strict, warn or off",
    ),
    (
        {"mode": ""},
        {},
        {},
        "--netguard-mode='' from the command line: expected strict, warn or off",
    ),
    (
        {},
        {},
        {"mode": "on"},
        "netguard_mode='on' from pytest.ini: expected strict, warn or off",
    ),
    (
        {},
        {},
        {"mode": 3},
        "netguard_mode=3 from pytest.ini: expected strict, warn or off",
    ),
    (
        {},
        {},
        {"mode": ["strict"]},
        "netguard_mode=['strict'] from pytest.ini: expected strict, warn or off",
    ),
    (
        {},
        {"NETGUARD_MODE": "strict,warn"},
        {},
        "NETGUARD_MODE='strict,warn' from the environment: expected strict, warn or off",
    ),
    # sizes
    (
        {},
        {"NETGUARD_DEFAULT_SIZE": "huge"},
        {},
        "NETGUARD_DEFAULT_SIZE='huge' from the environment: expected small, medium, large or "
        "xlarge",
    ),
    (
        {"default_size": "tiny"},
        {},
        {},
        "--netguard-default-size='tiny' from the command line: expected small, medium, large "
        "or xlarge",
    ),
    (
        {},
        {},
        {"default_size": "x-large"},
        "netguard_default_size='x-large' from pytest.ini: expected small, medium, large or xlarge",
    ),
    (
        {},
        {"NETGUARD_DEFAULT_SIZE": "strict"},
        {},
        "NETGUARD_DEFAULT_SIZE='strict' from the environment: expected small, medium, large or "
        "xlarge",
    ),
    # booleans
    (
        {},
        {"NETGUARD_VERBOSE": "maybe"},
        {},
        "NETGUARD_VERBOSE='maybe' from the environment: expected one of 1, 0, true, false, "
        "yes, no, on, off (any case)",
    ),
    (
        {},
        {"NETGUARD_VERBOSE": "2"},
        {},
        "NETGUARD_VERBOSE='2' from the environment: expected one of 1, 0, true, false, yes, "
        "no, on, off (any case)",
    ),
    (
        {},
        {"NETGUARD_VERBOSE": "enabled"},
        {},
        "NETGUARD_VERBOSE='enabled' from the environment: expected one of 1, 0, true, false, "
        "yes, no, on, off (any case)",
    ),
    (
        {},
        {},
        {"verbose": "y"},
        "netguard_verbose='y' from pytest.ini: expected one of 1, 0, true, false, yes, no, on, "
        "off (any case)",
    ),
    (
        {},
        {},
        {"verbose": 1},
        "netguard_verbose=1 from pytest.ini: expected one of 1, 0, true, false, yes, no, on, "
        "off (any case)",
    ),
    (
        {"verbose": ""},
        {},
        {},
        "--netguard-verbose='' from the command line: expected one of 1, 0, true, false, yes, "
        "no, on, off (any case)",
    ),
    # native mode's switch
    (
        {},
        {"NETGUARD_NATIVE": "native"},
        {},
        "NETGUARD_NATIVE='native' from the environment: expected one of 1, 0, true, false, "
        "yes, no, on, off (any case)",
    ),
    (
        {},
        {},
        {"native": "enabled"},
        "netguard_native='enabled' from pytest.ini: expected one of 1, 0, true, false, yes, "
        "no, on, off (any case)",
    ),
    (
        {"native": ""},
        {},
        {},
        "--netguard-native='' from the command line: expected one of 1, 0, true, false, yes, "
        "no, on, off (any case)",
    ),
    # rules and ports and CIDRs, from each source
    (
        {},
        {"NETGUARD_ALLOW": "10.0.0.1/8"},
        {},
        "NETGUARD_ALLOW[1]: invalid rule '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?",
    ),
    (
        {},
        {"NETGUARD_ALLOW": "a.example:443, 10.0.0.0/33"},
        {},
        "NETGUARD_ALLOW[2]: invalid rule '10.0.0.0/33': prefix length 33 is out of range 0-32",
    ),
    (
        {},
        {"NETGUARD_ALLOW": "192.0.2.0/255.255.255.0"},
        {},
        "NETGUARD_ALLOW[1]: invalid rule '192.0.2.0/255.255.255.0': prefix length "
        "'255.255.255.0' is not a number; did you mean /24?",
    ),
    (
        {"allow": ["ok.example", "http://x.example"]},
        {},
        {},
        "--netguard-allow[2]: invalid rule 'http://x.example': a URL is not a rule; write HOST "
        "or HOST:PORTS",
    ),
    (
        {"allow": ["192.0.2.1:99999"]},
        {},
        {},
        "--netguard-allow[1]: invalid rule '192.0.2.1:99999': port 99999 is out of range 0-65535",
    ),
    (
        {"allow": ["192.0.2.1:443", "api.example.com:https"]},
        {},
        {},
        "--netguard-allow[2]: invalid rule 'api.example.com:https': port 'https' is not a "
        "number (service names are not supported)",
    ),
    (
        {"allow": ["2001:db8::/129"]},
        {},
        {},
        "--netguard-allow[1]: invalid rule '2001:db8::/129': prefix length 129 is out of range "
        "0-128",
    ),
    (
        {"allow": ["unix:"]},
        {},
        {},
        "--netguard-allow[1]: invalid rule 'unix:': empty unix socket path",
    ),
    (
        {},
        {},
        {"allow": ["10.0.0.0/8:443", "192.0.2.1:8100-8000"]},
        "netguard_allow[2] in pytest.ini: invalid rule '192.0.2.1:8100-8000': port range "
        "8100-8000 is reversed; did you mean 8000-8100?",
    ),
    (
        {},
        {},
        {"allow": ["*."]},
        "netguard_allow[1] in pytest.ini: invalid rule '*.': a wildcard needs a domain: write "
        "*.example.com",
    ),
    (
        {},
        {},
        {"allow": ["192.0.2.010"]},
        "netguard_allow[1] in pytest.ini: invalid rule '192.0.2.010': not a valid IPv4 "
        "address: leading zeros are not allowed (in '010'); the kernel reads them as octal, "
        "192.0.2.8; did you mean 192.0.2.10?",
    ),
    (
        {},
        {},
        {"allow": ["ok.example", 5]},
        "netguard_allow=['ok.example', 5] from pytest.ini: expected rules as strings, not int 5",
    ),
    (
        {},
        {},
        {"allow": 5},
        "netguard_allow=5 from pytest.ini: expected rules as a string or a list of strings",
    ),
    (
        {},
        {"NETGUARD_ALLOW": "[192.0.2.1]:80"},
        {},
        "NETGUARD_ALLOW[1]: invalid rule '[192.0.2.1]:80': brackets are for IPv6 addresses; "
        "did you mean 192.0.2.1:80?",
    ),
    # files
    (
        {"allowlist": "missing.toml"},
        {},
        {},
        "--netguard-allowlist='missing.toml' from the command line: the allowlist file "
        "{cwd}/missing.toml does not exist",
    ),
    (
        {},
        {"NETGUARD_ALLOWLIST": "adir"},
        {},
        "NETGUARD_ALLOWLIST='adir' from the environment: {cwd}/adir is a directory; expected "
        "an allowlist file",
    ),
    (
        {},
        {},
        {"allowlist": "nope.toml"},
        "netguard_allowlist='nope.toml' from pytest.ini: the allowlist file {root}/nope.toml "
        "does not exist",
    ),
    (
        {},
        {},
        {"allowlist": 7},
        "netguard_allowlist=7 from pytest.ini: expected a file path",
    ),
    (
        {"allowlist": "a\x00b"},
        {},
        {},
        "--netguard-allowlist='a\\x00b' from the command line: a path cannot contain a NUL "
        "character",
    ),
    (
        {"report": "adir"},
        {},
        {},
        "--netguard-report='adir' from the command line: {cwd}/adir is a directory; expected a "
        "file path",
    ),
    (
        {},
        {},
        {"report": ["r.json"]},
        "netguard_report=['r.json'] from pytest.ini: expected a file path",
    ),
    (
        {},
        {"NETGUARD_ALLOWLIST": "bad.toml"},
        {},
        "bad.toml:2: entry 'x': unknown key 'adr' (did you mean 'addr'?); accepted keys: name, "
        "family, addr, cidr, host, path, port, ports",
    ),
    (
        {},
        {},
        {"allowlist": "bad.toml"},
        "bad.toml:2: entry 'x': unknown key 'adr' (did you mean 'addr'?); accepted keys: name, "
        "family, addr, cidr, host, path, port, ports",
    ),
]


@pytest.mark.parametrize(("cli", "env", "ini", "message"), BAD)
def test_bad_values(
    dirs: tuple[Path, Path],
    cli: dict[str, object],
    env: dict[str, str],
    ini: dict[str, object],
    message: str,
) -> None:
    root, cwd = dirs
    (cwd / "adir").mkdir()
    bad = '\n[[allowlist]]\nname = "x"\nadr = "192.0.2.1"\n'
    # bad.toml, entry at line 2: in cwd (env: shown absolute), in root (ini: relative)
    write(cwd / "bad.toml", "version = 1" + bad)
    write(root / "bad.toml", "version = 1" + bad)
    err = error_of(lambda: run(dirs, cli, env, ini))
    expected = message.replace("{root}", str(root)).replace("{cwd}", str(cwd))
    if "bad.toml" in message and env:
        expected = expected.replace("bad.toml", f"{cwd}/bad.toml")  # outside rootdir
    assert str(err) == expected
    assert isinstance(err, ValueError)
    assert err.source


def test_at_least_thirty_bad_inputs() -> None:
    assert len(BAD) + len(BAD_FILES) >= 60


def test_rule_errors_are_the_grammars(dirs: tuple[Path, Path]) -> None:
    """A bad rule's message is exactly the rule grammar's, with the rule's own source."""
    for text in (
        "10.0.0.1/8",
        "h.example:0x50",
        "2001:db8::1:80:",
        "bad_host!",
        "*.*.example",
        "[::1",
    ):
        for index, pieces in ((1, [text]), (3, ["192.0.2.1", "::1", text])):
            with pytest.raises(RuleError) as expected:
                parse_rule(split_rules(text)[0], source=f"NETGUARD_ALLOW[{index}]")
            env = {"NETGUARD_ALLOW": ",".join(pieces)}
            err = error_of(lambda: run(dirs, env=env))  # noqa: B023
            assert str(err) == str(expected.value)
            assert err.source == f"NETGUARD_ALLOW[{index}]"
            assert isinstance(err.__cause__, RuleError)


def test_config_error_pickles() -> None:
    err = ConfigError(
        "NETGUARD_MODE='x' from the environment: ...", source="environment NETGUARD_MODE"
    )
    err.__notes__ = ["a note"]  # what add_note() (3.11+) stores
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ConfigError
    assert str(back) == str(err)
    assert back.source == err.source
    assert back.__notes__ == ["a note"]


# --------------------------------------------------------------------------- split_rules


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("", []),
        (" , ,, ", []),
        ("192.0.2.1", ["192.0.2.1"]),
        ("192.0.2.1,192.0.2.2", ["192.0.2.1", "192.0.2.2"]),
        ("192.0.2.1 192.0.2.2\n192.0.2.3", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
        ("a.example:80,443", ["a.example:80,443"]),
        ("a.example:80, 443 ,8000-8100", ["a.example:80,443,8000-8100"]),
        ("a.example:80,443,b.example", ["a.example:80,443", "b.example"]),
        ("[2001:db8::1]:80,443,::1", ["[2001:db8::1]:80,443", "::1"]),
        ("2001:db8::1,80", ["2001:db8::1", "80"]),  # a bare IPv6 address has no ports
        ("a.example,80", ["a.example", "80"]),  # no port list to continue
        ("unix:/a.sock,80", ["unix:/a.sock", "80"]),
        ("unix:/tmp/a[,]b.sock,b.example", ["unix:/tmp/a[,]b.sock", "b.example"]),
        ("10.0.0.0/8:443,10.1.0.0/16:80", ["10.0.0.0/8:443", "10.1.0.0/16:80"]),
    ],
)
def test_split_rules(text: str, rules: list[str]) -> None:
    assert split_rules(text) == rules


# --------------------------------------------------------------------------- allowlists


def load(tmp_path: Path, text: str, name: str = "allow.toml") -> list[Rule]:
    return load_allowlist(write(tmp_path / name, text), display=name)


def test_allowlist_toml_tables(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """\
# the team's allowlist
version = 1

[[allowlist]]
name = "payments"
cidr = "10.20.0.0/16"
ports = [443, "8000-8100"]

  [[ allowlist ]]   # indented, spaced
  name = "db"
  family = "inet"
  addr = "10.30.0.5"
  port = 5432

[["allowlist"]]
name = "v6"
family = "inet6"
cidr = "2001:db8::/32"
ports = "80, 443"

[[allowlist]]
name = "svc"
family = "dns"
host = "*.svc.internal.example"

[[allowlist]]
name = "sock"
family = "unix"
path = "/run/*.sock"

[[allowlist]]
name = "abstract"
path = "@bus"

[[allowlist]]
name = "one6"
addr = "2001:db8::5"
port = 0
""",
    )
    assert [(r.name, str(r), r.source) for r in rules] == [
        ("payments", "10.20.0.0/16:443,8000-8100", "allow.toml:4"),
        ("db", "10.30.0.5:5432", "allow.toml:9"),
        ("v6", "[2001:db8::/32]:80,443", "allow.toml:15"),
        ("svc", "*.svc.internal.example", "allow.toml:21"),
        ("sock", "unix:/run/*.sock", "allow.toml:26"),
        ("abstract", "unix:@bus", "allow.toml:31"),
        ("one6", "[2001:db8::5]:0", "allow.toml:35"),
    ]
    # each rule is what the grammar makes of its text
    for rule in rules:
        assert rule == parse_rule(rule.text, source=rule.source, name=rule.name)


def test_allowlist_toml_inline_array(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """\
version = 1
allowlist = [
  { name = "a", addr = "192.0.2.1" },   # {not an entry}
  { name = "b", addr = "::ffff:192.0.2.2", family = "inet6", ports = ["80", 443] },

  {name="c",host="x.example",port=8080}, { name = "d", path = "/d.sock" },
]
""",
    )
    assert [(r.name, str(r), r.source) for r in rules] == [
        ("a", "192.0.2.1", "allow.toml:3"),
        ("b", "192.0.2.2:80,443", "allow.toml:4"),  # v4-mapped: judged as IPv4
        ("c", "x.example:8080", "allow.toml:6"),
        ("d", "unix:/d.sock", "allow.toml:6"),
    ]


def test_allowlist_toml_lines_ignore_strings_and_comments(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """\
version = 1 # [[allowlist]]
# [[allowlist]] {
[[allowlist]]
name = \"\"\"multi
[[allowlist]]
{ x = 1 }
\"\"\"
host = 'a.example'

[[allowlist]]
name = '''lit
[[allowlist]] {'''
addr = "192.0.2.1"
ports = [
  80,
  "443",  # [[allowlist]]
]
[[allowlist]]
name = "q\\"[[allowlist]]{"
path = "/x"
""",
    )
    assert [r.source for r in rules] == ["allow.toml:3", "allow.toml:10", "allow.toml:18"]
    assert [r.name for r in rules] == [
        "multi\n[[allowlist]]\n{ x = 1 }\n",
        "lit\n[[allowlist]] {",
        'q"[[allowlist]]{',
    ]


def test_allowlist_empty_and_bom(tmp_path: Path) -> None:
    assert load(tmp_path, "version = 1\nallowlist = []\n") == []
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfversion = 1\n[[allowlist]]\nname = "a"\nhost = "a.example"\n')
    assert [r.source for r in load_allowlist(path)] == [f"{path}:2"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["addr", "cidr", "host", "path"]),
            st.booleans(),  # inline table in an array, or a [[allowlist]] table
            st.integers(0, 2),  # blank and comment lines before the entry
        ),
        max_size=8,
    )
)
def test_allowlist_lines_property(entries: list[tuple[str, bool, int]]) -> None:
    """Every entry's rule points at the line the entry starts on, however it is laid out."""
    values = {"addr": "192.0.2.1", "cidr": "10.0.0.0/8", "host": "h.example", "path": "/s"}
    inline = [e for e in entries if e[1]]
    tables = [e for e in entries if not e[1]]
    if inline and tables:
        return  # TOML forbids both forms for one key
    lines = ["version = 1"]
    expected: list[int] = []
    ordered = inline + tables  # inline array entries come first in the parsed list
    if not entries:
        lines.append("allowlist = []")
    if inline:
        lines.append("allowlist = [")
        for i, (key, _, pad) in enumerate(inline):
            lines.extend(["  # {[[allowlist]]"] * pad)
            expected.append(len(lines) + 1)
            lines.append(f'  {{ name = "e{i}", {key} = "{values[key]}" }},')
        lines.append("]")
    for i, (key, _, pad) in enumerate(tables, len(inline)):
        lines.extend([""] * pad)
        expected.append(len(lines) + 1)
        lines.extend(["[[allowlist]]", f'name = "e{i}"', f'{key} = "{values[key]}"'])
    text = "\n".join(lines) + "\n"
    data = tomllib.loads(text)
    located = config._toml_lines(text)
    rules = allowlist_from_data(data, file="f", entry_lines=located.entries)
    assert [r.source for r in rules] == [f"f:{n}" for n in expected]
    assert [r.name for r in rules] == [f"e{i}" for i in range(len(ordered))]


# (file text, exact message); the file is allow.toml
BAD_FILES: list[tuple[str, str]] = [
    (
        'version = 1\n[[allowlist]]\nname = "x\n',
        "allow.toml:3: TOML syntax error: Illegal character '\\n'\n    name = \"x",
    ),
    (
        "version = 1\na = 1\na = 2\n",
        "allow.toml:3: TOML syntax error: Cannot overwrite a value\n    a = 2",
    ),
    (
        "version = 1\nallowlist = [\n",
        "allow.toml:3: TOML syntax error: Invalid value",
    ),
    (
        "",
        "allow.toml: missing version = 1 at the top of the file",
    ),
    (
        "allowlist = []\n",
        "allow.toml: missing version = 1 at the top of the file",
    ),
    (
        "version = 2\nallowlist = []\n",
        "allow.toml:1: unsupported version 2: this netguard reads version 1",
    ),
    (
        '\nversion = "1"\nallowlist = []\n',
        "allow.toml:2: version must be the integer 1, not '1'",
    ),
    (
        "version = true\nallowlist = []\n",
        "allow.toml:1: version must be the integer 1, not True",
    ),
    (
        "version = 1.0\nallowlist = []\n",
        "allow.toml:1: version must be the integer 1, not 1.0",
    ),
    (
        "version = 1\nallowlists = []\n",
        "allow.toml:2: unknown top-level key 'allowlists' (did you mean 'allowlist'?); "
        "expected version and allowlist",
    ),
    (
        "version = 1\n[netguard]\nx = 1\n",
        "allow.toml:2: unknown top-level key 'netguard'; expected version and allowlist",
    ),
    (
        "version = 1\n",
        "allow.toml: missing allowlist (an array of entries; it may be empty)",
    ),
    (
        'version = 1\nallowlist = "192.0.2.1"\n',
        "allow.toml:2: allowlist must be an array of tables ([[allowlist]]) / a list of "
        "mappings, not a string ('192.0.2.1')",
    ),
    (
        'version = 1\n\n[allowlist]\nname = "a"\n',
        "allow.toml:3: allowlist must be an array of tables ([[allowlist]]) / a list of "
        "mappings, not a table",
    ),
    (
        "version = 1\nallowlist = [1]\n",
        "allow.toml:2: allowlist entry 1 must be a table/mapping, not a number (1)",
    ),
    (
        'version = 1\n[[allowlist]]\nhost = "a.example"\n',
        'allow.toml:2: entry 1: missing name (every entry needs a unique name = "...")',
    ),
    (
        'version = 1\n[[allowlist]]\nname = 5\nhost = "a.example"\n',
        "allow.toml:2: entry 1: name must be a string, not a number (5)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = " "\nhost = "a.example"\n',
        "allow.toml:2: entry 1: name must not be empty",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nprot = 5432\n',
        "allow.toml:2: entry 'db': unknown key 'prot' (did you mean 'port'?); accepted keys: "
        "name, family, addr, cidr, host, path, port, ports",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\ncomment = "x"\n',
        "allow.toml:2: entry 'db': unknown key 'comment'; accepted keys: name, family, addr, "
        "cidr, host, path, port, ports",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "10.0.0.1"\ncidr = "10.0.0.0/8"\n',
        "allow.toml:2: entry 'db': both addr and cidr given ('10.0.0.1' and '10.0.0.0/8'); "
        "give exactly one",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\npath = "/s"\n',
        "allow.toml:2: entry 'db': both host and path given ('a.example' and '/s'); give "
        "exactly one",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nport = 5432\n',
        "allow.toml:2: entry 'db': no destination: give one of addr, cidr, host or path",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "db.example"\n',
        "allow.toml:2: entry 'db': addr 'db.example' is not an IP address (use host for a name)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "10.0.0.0/8"\n',
        "allow.toml:2: entry 'db': addr '10.0.0.0/8' is a block (use cidr for an address block)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "10.0.0.1:5432"\n',
        "allow.toml:2: entry 'db': addr '10.0.0.1:5432': give the port in port or ports, not "
        "in addr",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "[2001:db8::1]"\n',
        "allow.toml:2: entry 'db': addr '[2001:db8::1]': write the address without brackets",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "10.0.0.256"\n',
        "allow.toml:2: entry 'db': addr '10.0.0.256': not a valid IPv4 address: 256 is greater "
        "than 255",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\ncidr = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': cidr '10.0.0.1' has no prefix length (use addr for one "
        "address)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\ncidr = "10.0.0.1/8"\n',
        "allow.toml:2: entry 'db': cidr '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\ncidr = "2001:db8::/200"\n',
        "allow.toml:2: entry 'db': cidr '2001:db8::/200': prefix length 200 is out of range 0-128",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\ncidr = "db.example"\n',
        "allow.toml:2: entry 'db': cidr 'db.example' is not an address block such as 10.0.0.0/8",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': host '10.0.0.1' is an IP address (use addr or cidr)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "bad_host!"\n',
        "allow.toml:2: entry 'db': host 'bad_host!': invalid character '!' in host name",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example:443"\n',
        "allow.toml:2: entry 'db': host 'a.example:443': give the port in port or ports, not "
        "in host",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nport = "443"\n',
        "allow.toml:2: entry 'db': port must be an integer, not a string ('443') (use ports "
        "for a list or range)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nport = 70000\n',
        "allow.toml:2: entry 'db': port 70000 is out of range 0-65535",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nport = -1\n',
        "allow.toml:2: entry 'db': port -1 is out of range 0-65535",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nport = 1\nports = [2]\n',
        "allow.toml:2: entry 'db': both port and ports given (1 and [2]); give one",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = []\n',
        "allow.toml:2: entry 'db': ports is empty (leave it out to allow any port)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = ["80-70"]\n',
        "allow.toml:2: entry 'db': invalid rule 'a.example:80-70' (built from this entry): "
        "port range 80-70 is reversed; did you mean 70-80?",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = "80,,443"\n',
        "allow.toml:2: entry 'db': invalid rule 'a.example:80,,443' (built from this entry): "
        "empty item in port list",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = [80, 65536]\n',
        "allow.toml:2: entry 'db': port 65536 is out of range 0-65535",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = [true]\n',
        "allow.toml:2: entry 'db': ports item True is not an integer or a string",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = [""]\n',
        "allow.toml:2: entry 'db': ports has an empty string",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\nports = {a = 1}\n',
        'allow.toml:2: entry \'db\': ports must be a list of integers and "80,443"/"8000-8100" '
        "strings, not a table",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\npath = "/s"\nport = 80\n',
        "allow.toml:2: entry 'db': port given with a path: unix sockets have no ports",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\npath = "unix:/s"\n',
        "allow.toml:2: entry 'db': path 'unix:/s': write the path without 'unix:'",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\npath = ""\n',
        "allow.toml:2: entry 'db': invalid rule 'unix:' (built from this entry): empty unix "
        "socket path",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\naddr = 5\n',
        "allow.toml:2: entry 'db': addr must be a string, not a number (5)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = ["a.example"]\n',
        "allow.toml:2: entry 'db': host must be a string, not a list",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = "ipv4"\naddr = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': family 'ipv4': expected inet, inet6, dns, unix",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = "inet4"\naddr = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': family 'inet4' (did you mean 'inet'?): expected inet, "
        "inet6, dns, unix",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = "inet6"\naddr = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': family 'inet6' does not match addr '10.0.0.1' (family "
        "'inet6' takes an IPv6 addr or cidr; this is 'inet')",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = "inet"\nhost = "a.example"\n',
        "allow.toml:2: entry 'db': family 'inet' does not match host 'a.example' (family "
        "'inet' takes an IPv4 addr or cidr; this is 'dns')",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = "dns"\npath = "/s"\n',
        "allow.toml:2: entry 'db': family 'dns' does not match path '/s' (family 'dns' takes a "
        "host; this is 'unix')",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nfamily = 4\naddr = "10.0.0.1"\n',
        "allow.toml:2: entry 'db': family must be a string, not a number (4)",
    ),
    (
        'version = 1\n[[allowlist]]\nname = "db"\nhost = "a.example"\n\n[[allowlist]]\n'
        'name = "db"\nhost = "b.example"\n',
        "allow.toml:6: entry 'db': duplicate name (first used at allow.toml:2)",
    ),
    (
        "version = 1\n"
        'allowlist = [{name = "a", host = "a.example"}, {name = "b", addr = "x.example"}]\n',
        "allow.toml:2: entry 'b': addr 'x.example' is not an IP address (use host for a name)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_allowlist_files(tmp_path: Path, text: str, message: str) -> None:
    err = error_of(lambda: load(tmp_path, text))
    assert str(err) == message
    assert err.source == message.partition(": ")[0]


def test_unreadable_allowlist_files(tmp_path: Path) -> None:
    err = error_of(lambda: load_allowlist(tmp_path / "none.toml", display="none.toml"))
    assert str(err) == "none.toml: cannot read the allowlist file: No such file or directory"
    err = error_of(lambda: load_allowlist(tmp_path))
    assert str(err) == f"{tmp_path}: cannot read the allowlist file: Is a directory"
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'version = 1\n[[allowlist]]\nname = "caf\xe9"\n')
    err = error_of(lambda: load_allowlist(path, display="latin1.toml"))
    assert str(err) == "latin1.toml:3: not UTF-8 text (byte 0xe9)"


def test_allowlist_display_in_resolve(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = dirs
    text = 'version = 1\n[[allowlist]]\nname = "a"\nhost = "a.example"\n'
    write(root / "ci/allow.toml", text)
    write(tmp_path / "elsewhere.toml", text)
    s = run(dirs, ini={"allowlist": "ci/allow.toml"})
    assert [r.source for r in s.allow_rules] == ["ci/allow.toml:2"]
    s = run(dirs, env={"NETGUARD_ALLOWLIST": str(tmp_path / "elsewhere.toml")})
    assert [r.source for r in s.allow_rules] == [f"{tmp_path / 'elsewhere.toml'}:2"]


def test_allow_and_allowlist_rules_add_up(dirs: tuple[Path, Path]) -> None:
    root, _ = dirs
    write(
        root / "allow.toml",
        'version = 1\n[[allowlist]]\nname = "db"\naddr = "10.0.0.5"\nport = 5432\n',
    )
    s = run(
        dirs,
        env={"NETGUARD_ALLOW": "192.0.2.1:443"},
        ini={"allowlist": "allow.toml", "allow": ["ignored.example"]},
    )
    assert [(str(r), r.source, r.name) for r in s.allow_rules] == [
        ("192.0.2.1:443", "NETGUARD_ALLOW[1]", None),
        ("10.0.0.5:5432", "allow.toml:2", "db"),
    ]
    assert s.allowlist == root / "allow.toml"
    assert s.allowlist_source == "ini netguard_allowlist in pytest.ini"


# --------------------------------------------------------------------------- YAML


def test_yaml_schema_from_parsed_data() -> None:
    """What yaml.safe_load gives goes through the same checks (no PyYAML needed)."""
    data: dict[str, Any] = {
        "version": 1,
        "allowlist": [
            {"name": "a", "cidr": "10.0.0.0/8", "ports": [443, "8000-8100"]},
            {"name": "b", "host": "*.example.com", "port": 443, "family": "dns"},
        ],
    }
    rules = allowlist_from_data(data, file="allow.yaml", entry_lines=[4, 8])
    assert [(r.name, str(r), r.source) for r in rules] == [
        ("a", "10.0.0.0/8:443,8000-8100", "allow.yaml:4"),
        ("b", "*.example.com:443", "allow.yaml:8"),
    ]
    # YAML reads "yes" as a boolean and "1:30" as a number: both are type errors here
    data["allowlist"][1]["name"] = True
    err = error_of(lambda: allowlist_from_data(data, file="allow.yaml", entry_lines=[4, 8]))
    assert str(err) == "allow.yaml:8: entry 2: name must be a string, not a boolean (True)"
    err = error_of(lambda: allowlist_from_data(None, file="allow.yaml"))
    assert str(err) == ("allow.yaml: the file is empty; expected version = 1 and an allowlist")
    err = error_of(lambda: allowlist_from_data(["x"], file="allow.yaml"))
    assert str(err) == (
        "allow.yaml: expected a table/mapping with version and allowlist at the top, not a list"
    )
    # without lines, an entry is placed at the allowlist key, or at the file
    err = error_of(
        lambda: allowlist_from_data(
            {"version": 1, "allowlist": [{"name": "x"}]}, file="f", key_lines={"allowlist": 3}
        )
    )
    assert str(err) == "f:3: entry 'x': no destination: give one of addr, cidr, host or path"
    err = error_of(lambda: allowlist_from_data({"version": 1, "allowlist": [{}]}, file="f"))
    assert str(err).startswith("f: entry 1: missing name")


def test_yaml_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml fails
    for suffix in ("yaml", "yml", "YAML"):
        path = write(tmp_path / f"allow.{suffix}", "version: 1\nallowlist: []\n")
        err = error_of(lambda: load_allowlist(path))  # noqa: B023
        assert str(err) == YAML_MISSING.format(file=path)


def load_yaml(tmp_path: Path, text: str, name: str = "allow.yaml") -> list[Rule] | None:
    """load_allowlist of a YAML file: its rules with PyYAML; without, check the error."""
    path = write(tmp_path / name, text)
    if not HAVE_YAML:
        err = error_of(lambda: load_allowlist(path, display=name))
        assert str(err) == YAML_MISSING.format(file=name)
        return None
    return load_allowlist(path, display=name)


def yaml_error(tmp_path: Path, text: str) -> str | None:
    """The message of a bad YAML file with PyYAML; None (the missing-extra error) without."""
    if not HAVE_YAML:
        assert load_yaml(tmp_path, text) is None
        return None
    return str(error_of(lambda: load_yaml(tmp_path, text)))


def test_yaml_file(tmp_path: Path) -> None:
    rules = load_yaml(
        tmp_path,
        """\
# allowlist
version: 1
allowlist:
  - name: payments
    cidr: 10.20.0.0/16
    ports: [443, "8000-8100"]

  - name: db
    family: inet
    addr: 10.30.0.5
    port: 5432
  - {name: svc, host: "*.svc.example", ports: "80,443"}
  -
    name: sock
    path: /run/*.sock
""",
    )
    if rules is None:
        return
    assert [(r.name, str(r), r.source) for r in rules] == [
        ("payments", "10.20.0.0/16:443,8000-8100", "allow.yaml:4"),
        ("db", "10.30.0.5:5432", "allow.yaml:8"),
        ("svc", "*.svc.example:80,443", "allow.yaml:12"),
        ("sock", "unix:/run/*.sock", "allow.yaml:14"),
    ]


def test_yaml_yml_suffix_and_empty_list(tmp_path: Path) -> None:
    rules = load_yaml(tmp_path, "version: 1\nallowlist: []\n", name="allow.yml")
    assert rules in (None, [])


# (YAML text, exact message with PyYAML); "" marks a valid file
BAD_YAML: list[tuple[str, str]] = [
    (
        "version: 1\nallowlist:\n  - name: [\n",
        "allow.yaml:4: YAML syntax error: while parsing a flow node: expected the node "
        "content, but found '<stream end>'",
    ),
    (
        "version: 1\nallowlist:\n- name: a\n  host: a.example\n bad: x\n",
        "allow.yaml:5: YAML syntax error: while parsing a block mapping: expected <block end>, "
        "but found '<block mapping start>'\n    bad: x",
    ),
    (
        'version: 1\nallowlist:\n  - name: a\n    host: "a.example\n',
        "allow.yaml:5: YAML syntax error: while scanning a quoted scalar: found unexpected end "
        "of stream",
    ),
    (
        "version: 1\n---\nversion: 1\n",
        "allow.yaml:2: YAML syntax error: expected a single document in the stream: but found "
        "another document\n    ---",
    ),
    (
        "",
        "allow.yaml: the file is empty; expected version = 1 and an allowlist",
    ),
    (
        "# nothing\n",
        "allow.yaml: the file is empty; expected version = 1 and an allowlist",
    ),
    (
        "- version: 1\n",
        "allow.yaml: expected a table/mapping with version and allowlist at the top, not a list",
    ),
    (
        "version: 2\nallowlist: []\n",
        "allow.yaml:1: unsupported version 2: this netguard reads version 1",
    ),
    (
        "allowlist: []\nversoin: 1\n",
        "allow.yaml:2: unknown top-level key 'versoin' (did you mean 'version'?); expected "
        "version and allowlist",
    ),
    (
        "version: 1\nallowlist:\n  - just a string\n",
        "allow.yaml:3: allowlist entry 1 must be a table/mapping, not a string ('just a string')",
    ),
    (
        "version: 1\nallowlist:\n  - name: a\n    host: a.example\n  - name: yes\n",
        "allow.yaml:5: entry 2: name must be a string, not a boolean (True)",
    ),
    (
        "version: 1\nallowlist:\n  - name: a\n    addr: 10.0.0.1\n    cidr: 10.0.0.0/8\n",
        "allow.yaml:3: entry 'a': both addr and cidr given ('10.0.0.1' and '10.0.0.0/8'); give "
        "exactly one",
    ),
    (
        "version: 1\nallowlist:\n  - name: a\n    host: a.example\n    port: 0o17\n",
        "allow.yaml:3: entry 'a': port must be an integer, not a string ('0o17') (use ports "
        "for a list or range)",
    ),
    (
        "version: 1\nallowlist:\n  - name: a\n    host: a.example\n\n  - name: a\n"
        "    addr: 192.0.2.1\n",
        "allow.yaml:6: entry 'a': duplicate name (first used at allow.yaml:3)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    got = yaml_error(tmp_path, text)
    if got is not None:  # PyYAML installed
        assert got == message


def test_yaml_quirks(tmp_path: Path) -> None:
    # YAML 1.1 reads 1:30 as sexagesimal 90 (an int, so a valid port); merge keys work
    rules = load_yaml(
        tmp_path,
        "version: 1\nallowlist:\n  - &base {name: a, host: a.example, port: 1:30}\n"
        "  - <<: *base\n    name: b\n",
    )
    if rules is not None:
        assert [(r.name, str(r), r.source) for r in rules] == [
            ("a", "a.example:90", "allow.yaml:3"),
            ("b", "a.example:90", "allow.yaml:4"),
        ]


# --------------------------------------------------------------------------- the docs page


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.source_tree
def test_docs_page_is_generated_from_the_table() -> None:
    gen = _generator()
    text = gen.render()
    checked_in = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert checked_in == text, (
        "docs/configuration.md is out of date: run python scripts/gen_config_docs.py"
    )
    assert gen.main(["--check"]) == 0
    for opt in OPTIONS:
        assert f"`{opt.flag}" in text and f"`{opt.env}`" in text and f"`{opt.ini}`" in text


@pytest.mark.source_tree
def test_docs_examples_are_valid(tmp_path: Path) -> None:
    gen = _generator()
    toml_rules = load(tmp_path, gen.EXAMPLE_TOML, name="allowlist.toml")
    assert [r.name for r in toml_rules] == [
        "payments-api",
        "staging-db",
        "internal-services",
        "docker",
    ]
    yaml_rules = load_yaml(tmp_path, gen.EXAMPLE_YAML, name="allowlist.yaml")
    if yaml_rules is not None:
        assert [(r.name, str(r)) for r in yaml_rules] == [(r.name, str(r)) for r in toml_rules]


NETAUDIT_YAML = """\
version: 1
includes_builtins: true
allowlist:
  - name: staging-db
    family: AF_INET
    addr: 10.30.0.5
    port: 5432
  - name: corp6
    family: AF_INET6
    cidr: 2001:db8::/32
  - name: docker
    family: AF_UNIX
    path_glob: /var/run/docker*.sock
  - name: pg-sockets
    family: AF_UNIX
    path_prefix: /run/postgresql/
  - name: nl
    family: AF_NETLINK
"""


def test_netaudit_allowlist_reads_as_is(tmp_path: Path) -> None:
    path = tmp_path / "netaudit.yaml"
    path.write_text(NETAUDIT_YAML)
    rules = load_allowlist(path)
    assert [(r.name, str(r)) for r in rules] == [
        ("staging-db", "10.30.0.5:5432"),
        ("corp6", "2001:db8::/32"),
        ("docker", "unix:/var/run/docker*.sock"),
        ("pg-sockets", "unix:/run/postgresql/*"),
    ]
    assert rules[0].source.endswith("netaudit.yaml:4")


def test_netaudit_family_still_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n    addr: 10.0.0.1\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml:3: .*family 'inet6' does not match"):
        load_allowlist(path)
