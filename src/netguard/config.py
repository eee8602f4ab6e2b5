"""The options table and its resolution: command line > environment > ini > default.

:data:`OPTIONS` is the one declarative table of netguard's settings. The plugin registers
its flags (:meth:`Option.addoption_kwargs`) and ini keys (:meth:`Option.addini_kwargs`) from
it, ``--help`` shows its help texts, and ``docs/configuration.md`` is generated from it
(``scripts/gen_config_docs.py``). :func:`resolve` turns the raw values of the three sources
into one frozen :class:`Settings`, remembering where each value came from;
:func:`load_allowlist` reads an allowlist file (TOML, or YAML with the ``yaml`` extra).

Every invalid value raises :class:`ConfigError` (a :class:`ValueError`; the plugin turns it
into a ``pytest.UsageError``), whose message names the source and the accepted values::

    NETGUARD_MODE='strictt' from the environment: expected strict, warn or off
    allow.toml:12: entry 'db': both addr and cidr given ('10.0.0.1' and '10.0.0.0/8')

Everything here is a pure function of its arguments (plus the allowlist file it is told to
read): nothing touches ``os.environ``, the working directory or pytest.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from netguard._record import Record, init

# The plugin imports this module at startup: TOML, YAML and difflib are imported only
# when an allowlist file is read or an error message is built, and typing-only names
# stay out of the runtime.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows it)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal

    from netguard.rules import Rule

    IniType = Literal["string", "linelist", "bool", "args"]
    Kind = Literal["choice", "rules", "path", "bool", "names", "text"]
    _Fail = Callable[[str], "ConfigError"]
del TYPE_CHECKING

__all__ = [
    "ALLOWLIST_FAMILIES",
    "ALLOWLIST_KEYS",
    "ALLOWLIST_VERSION",
    "OPTIONS",
    "ConfigError",
    "Option",
    "Settings",
    "allowlist_from_data",
    "load_allowlist",
    "option",
    "parse_bool",
    "resolve",
    "split_rules",
]


class ConfigError(ValueError):
    """An invalid setting or allowlist file.

    ``str(err)`` names where the value came from (a flag, a variable, an ini key, a file and
    line) and what was expected. ``source`` is that place on its own (``"environment
    NETGUARD_MODE"``, ``"allow.toml:12"``). Pickles with its attributes (it may cross
    pytest-xdist workers).
    """

    source: str

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), str(self), self.source), self.__dict__)


def _rebuild_error(cls: type[ConfigError], message: str, source: str) -> ConfigError:
    return cls(message, source=source)


# --------------------------------------------------------------------------- the table

#: The database safety gate's defaults (netguard.safety): the variables it checks ...
DATABASE_SAFETY_VARS: tuple[str, ...] = (
    "DATABASE_URL",
    "*_DATABASE_URL",
    "REDIS_URL",
    "*_REDIS_URL",
)
#: ... the host names it takes as local ...
DATABASE_SAFETY_HOSTS: tuple[str, ...] = ("localhost", "db", "redis", "postgres")
#: ... and the prefix of a test database's name.
DATABASE_SAFETY_PREFIX = "test_"


class Option(Record):
    """One setting: its name, type, default and help. Its names in the three sources
    follow from the name (:attr:`flag`, :attr:`env`, :attr:`ini`).

    ``kind`` says how a value is parsed: ``"choice"`` (one of ``choices``, any case),
    ``"rules"`` (a list of rules, see :func:`split_rules`), ``"path"`` (a file path),
    ``"bool"`` (see :func:`parse_bool`), ``"names"`` (a list of words separated by commas
    or whitespace, each matching ``pattern``) or ``"text"`` (one word matching
    ``pattern``); ``expected`` describes what ``pattern`` accepts, for messages.
    ``ini_type`` is the type the ini key is registered with in pytest. ``repeatable``
    flags may be given more than once.
    """

    __slots__ = (
        "name", "ini_type", "kind", "default", "help", "choices", "repeatable", "metavar",
        "pattern", "expected",
    )
    name: str
    ini_type: IniType
    kind: Kind
    default: object
    help: str
    choices: tuple[str, ...]
    repeatable: bool
    metavar: str | None
    pattern: str | None
    expected: str

    def __init__(
        self,
        name: str,
        ini_type: IniType,
        kind: Kind,
        default: object,
        help: str,
        choices: tuple[str, ...] = (),
        repeatable: bool = False,
        metavar: str | None = None,
        pattern: str | None = None,
        expected: str = "",
    ) -> None:
        init(self, "name", name)
        init(self, "ini_type", ini_type)
        init(self, "kind", kind)
        init(self, "default", default)
        init(self, "help", help)
        init(self, "choices", choices)
        init(self, "repeatable", repeatable)
        init(self, "metavar", metavar)
        init(self, "pattern", pattern)
        init(self, "expected", expected)

    @property
    def flag(self) -> str:
        """The command-line flag: ``--netguard-`` and the name (``--netguard-default-size``)."""
        return "--netguard-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable: ``NETGUARD_`` and the name (``NETGUARD_DEFAULT_SIZE``)."""
        return "NETGUARD_" + self.name.upper()

    @property
    def ini(self) -> str:
        """The ini key: ``netguard_`` and the name (``netguard_default_size``)."""
        return "netguard_" + self.name

    @property
    def dest(self) -> str:
        """The ``argparse`` destination of the flag (``--netguard-mode`` -> ``netguard_mode``)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def default_text(self) -> str:
        """The default as the docs and ``--help`` show it."""
        default = self.default
        if default is None or default == ():
            return "none"
        if isinstance(default, bool):
            return "true" if default else "false"
        if isinstance(default, tuple):
            return ", ".join(map(str, default))
        return str(default)

    def addoption_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``parser.getgroup(...).addoption(self.flag, **...)``.

        The default is ``None`` (or no list), so :func:`resolve` can tell "not given" from
        a value; choices are not passed to ``argparse`` so that a bad value gets the same
        sourced message from every source.
        """
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, "help": self.cli_help()}
        if self.kind == "bool":
            kwargs["action"] = "store_true"
        else:
            kwargs["action"] = "append" if self.repeatable else "store"
            kwargs["metavar"] = self.metavar
        return kwargs

    def addini_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``parser.addini(self.ini, **...)``.

        The default is ``None``, so an unset key is told apart from a set one.
        """
        return {"help": self.help, "type": self.ini_type, "default": None}

    def cli_help(self) -> str:
        """The ``--help`` text: the help, the other sources and the default."""
        text = f"{self.help} [env {self.env}, ini {self.ini}; default: {self.default_text}]"
        return text.replace("%", "%%")  # argparse formats help with %


OPTIONS: tuple[Option, ...] = (
    Option(
        name="mode",
        ini_type="string",
        kind="choice",
        default="off",
        choices=("strict", "warn", "off"),
        metavar="{strict,warn,off}",
        help=(
            "strict: a blocked call raises NetworkViolationError and fails the test; "
            "warn: it goes through with a NetworkViolationWarning; "
            "off: nothing is patched."
        ),
    ),
    Option(
        name="default_size",
        ini_type="string",
        kind="choice",
        default="small",
        choices=("small", "medium", "large", "xlarge"),
        metavar="{small,medium,large,xlarge}",
        help="The size of tests with no size marker.",
    ),
    Option(
        name="allow",
        ini_type="linelist",
        kind="rules",
        default=(),
        repeatable=True,
        metavar="RULE",
        help=(
            "Rules that extend what medium, large and xlarge tests may reach "
            "(small tests stay hermetic). The flag may be repeated; the variable is a "
            "comma-separated list; the ini key takes one or more rules per line."
        ),
    ),
    Option(
        name="allowlist",
        ini_type="string",
        kind="path",
        default=None,
        metavar="FILE",
        help=(
            "An allowlist file of named rules (TOML; .yaml/.yml with the yaml extra), "
            "added to the allow rules."
        ),
    ),
    Option(
        name="report",
        ini_type="string",
        kind="path",
        default=None,
        metavar="PATH",
        help="Write every network event of the run (allowed and blocked) as JSON to PATH.",
    ),
    Option(
        name="verbose",
        # read as a string and parsed here: pytest's own bool parsing would reject a bad
        # value with a message that does not name the key
        ini_type="string",
        kind="bool",
        default=False,
        help="Show a table of every network event with the rule that allowed it.",
    ),
    Option(
        name="native",
        ini_type="string",
        kind="bool",
        default=False,
        help=(
            "Native mode (Linux only): the same policy for C libraries in the test "
            "process and for child processes; needs mode strict or warn (with mode off "
            "it does nothing)."
        ),
    ),
    Option(
        name="database_safety",
        ini_type="string",
        kind="bool",
        default=False,
        help=(
            "Before collection, check every database and cache URL variable and stop the "
            "session when one does not look like a test resource (any mode, off included)."
        ),
    ),
    Option(
        name="database_safety_vars",
        ini_type="linelist",
        kind="names",
        default=DATABASE_SAFETY_VARS,
        repeatable=True,
        metavar="PATTERN",
        pattern=r"[A-Za-z0-9_*?\[\]!-]+",
        expected="environment variable names or shell-style patterns (DATABASE_URL, *_DB_URL)",
        help=(
            "The environment variables the database safety gate checks: names or "
            "shell-style patterns, case-sensitive; a list, given like the allow rules."
        ),
    ),
    Option(
        name="database_safety_hosts",
        ini_type="linelist",
        kind="names",
        default=DATABASE_SAFETY_HOSTS,
        repeatable=True,
        metavar="NAME",
        pattern=r"[A-Za-z0-9._-]+",
        expected="host names (letters, digits, '.', '-', '_')",
        help=(
            "Host names the database safety gate takes as local (services next to the "
            "tests), besides loopback, unix sockets and the allow rules."
        ),
    ),
    Option(
        name="database_safety_prefix",
        ini_type="string",
        kind="text",
        default=DATABASE_SAFETY_PREFIX,
        metavar="PREFIX",
        pattern=r"[^\s/]+",
        expected="a non-empty prefix without whitespace or '/'",
        help=(
            "A test database's name starts with this prefix (or ends with _test), for "
            "the database safety gate."
        ),
    ),
)

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The row of :data:`OPTIONS` called ``name`` (``KeyError`` if there is none)."""
    return _BY_NAME[name]


# --------------------------------------------------------------------------- settings


class Settings(Record):
    """The resolved settings, each with the source it came from.

    Sources read ``"command line --netguard-mode"``, ``"environment NETGUARD_MODE"``,
    ``"ini netguard_mode in pyproject.toml"`` or ``"default"``. ``allow_rules`` holds the
    rules of the ``allow`` setting, each with its own ``source`` (``--netguard-allow[1]``,
    ``NETGUARD_ALLOW[2]``, ``netguard_allow[3] in pytest.ini``), followed by the rules of
    the allowlist file (``source`` ``FILE:LINE``, ``name`` the entry's name). Paths are
    absolute. ``Settings()`` is the all-defaults value.
    """

    __slots__ = (
        "mode", "default_size", "allow_rules", "allowlist", "report", "verbose", "mode_source",
        "default_size_source", "allow_source", "allowlist_source", "report_source",
        "verbose_source", "native", "native_source", "database_safety", "database_safety_vars",
        "database_safety_hosts", "database_safety_prefix", "database_safety_source",
        "database_safety_vars_source", "database_safety_hosts_source",
        "database_safety_prefix_source",
    )
    mode: str
    default_size: str
    allow_rules: tuple[Rule, ...]
    allowlist: Path | None
    report: Path | None
    verbose: bool
    mode_source: str
    default_size_source: str
    allow_source: str
    allowlist_source: str
    report_source: str
    verbose_source: str
    native: bool
    native_source: str
    database_safety: bool
    database_safety_vars: tuple[str, ...]
    database_safety_hosts: tuple[str, ...]
    database_safety_prefix: str
    database_safety_source: str
    database_safety_vars_source: str
    database_safety_hosts_source: str
    database_safety_prefix_source: str

    def __init__(
        self,
        mode: str = "off",
        default_size: str = "small",
        allow_rules: tuple[Rule, ...] = (),
        allowlist: Path | None = None,
        report: Path | None = None,
        verbose: bool = False,
        mode_source: str = "default",
        default_size_source: str = "default",
        allow_source: str = "default",
        allowlist_source: str = "default",
        report_source: str = "default",
        verbose_source: str = "default",
        native: bool = False,
        native_source: str = "default",
        database_safety: bool = False,
        database_safety_vars: tuple[str, ...] = DATABASE_SAFETY_VARS,
        database_safety_hosts: tuple[str, ...] = DATABASE_SAFETY_HOSTS,
        database_safety_prefix: str = DATABASE_SAFETY_PREFIX,
        database_safety_source: str = "default",
        database_safety_vars_source: str = "default",
        database_safety_hosts_source: str = "default",
        database_safety_prefix_source: str = "default",
    ) -> None:
        init(self, "mode", mode)
        init(self, "default_size", default_size)
        init(self, "allow_rules", allow_rules)
        init(self, "allowlist", allowlist)
        init(self, "report", report)
        init(self, "verbose", verbose)
        init(self, "mode_source", mode_source)
        init(self, "default_size_source", default_size_source)
        init(self, "allow_source", allow_source)
        init(self, "allowlist_source", allowlist_source)
        init(self, "report_source", report_source)
        init(self, "verbose_source", verbose_source)
        init(self, "native", native)
        init(self, "native_source", native_source)
        init(self, "database_safety", database_safety)
        init(self, "database_safety_vars", database_safety_vars)
        init(self, "database_safety_hosts", database_safety_hosts)
        init(self, "database_safety_prefix", database_safety_prefix)
        init(self, "database_safety_source", database_safety_source)
        init(self, "database_safety_vars_source", database_safety_vars_source)
        init(self, "database_safety_hosts_source", database_safety_hosts_source)
        init(self, "database_safety_prefix_source", database_safety_prefix_source)

    def source_of(self, name: str) -> str:
        """Where the setting ``name`` (a row of :data:`OPTIONS`) came from."""
        if name not in _BY_NAME:
            raise KeyError(name)
        source: str = getattr(self, name + "_source")
        return source


# --------------------------------------------------------------------------- values

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_BOOL_WORDS = ", ".join(w for pair in zip(_TRUE, _FALSE, strict=True) for w in pair)


def parse_bool(text: str) -> bool | None:
    """``True`` for 1/true/yes/on, ``False`` for 0/false/no/off (any case), else ``None``."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


# The patterns of this module are compiled on first use (re's cache), not at import: the
# plugin imports this module in every pytest run, and most runs need none of them.


def _port_piece(text: str) -> re.Match[str] | None:
    """A piece of a rule list that only continues the port list of the rule before it."""
    return re.fullmatch(r"[0-9]+(?:-[0-9]+)?", text, re.ASCII)


def _ends_in_ports(text: str) -> re.Match[str] | None:
    return re.search(r":[0-9][0-9,-]*\Z", text, re.ASCII)


def split_rules(text: str) -> list[str]:
    """Split a list of rules written in one string (``NETGUARD_ALLOW``, an ini line).

    Rules are separated by commas and/or whitespace; empty items are ignored. Since a port
    list also uses commas, an item that is only a port or a port range continues the port
    list of the rule before it when that rule has one: ``a.example:80,443,10.0.0.0/8`` is
    ``a.example:80,443`` and ``10.0.0.0/8`` (a port alone is never a rule). Commas inside
    ``[...]`` do not separate, so a unix glob can match a comma as ``[,]``.
    """
    pieces: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if current:
                pieces.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        pieces.append("".join(current))
    rules: list[str] = []
    for piece in pieces:
        if rules and _port_piece(piece) and _has_port_list(rules[-1]):
            rules[-1] += "," + piece
        else:
            rules.append(piece)
    return rules


def _has_port_list(rule: str) -> bool:
    if rule[:5].lower() == "unix:" or not _ends_in_ports(rule):
        return False
    # "[v6]:PORTS" or "HOST:PORTS"; a bare IPv6 address ("2001:db8::1") has no ports.
    return rule.startswith("[") or rule.count(":") == 1


# --------------------------------------------------------------------------- resolution


class _Raw:
    """One value as given by one source, with the words its messages use."""

    __slots__ = ("item_suffix", "kind", "label", "source", "value", "where")

    def __init__(
        self,
        value: object,
        label: str,
        where: str,
        source: str,
        kind: Literal["cli", "env", "ini", "default"],
        item_suffix: str = "",
    ) -> None:
        self.value = value
        self.label = label  # the name as written there: "--netguard-mode", "NETGUARD_MODE"
        self.where = where  # for "... from {where}": "the command line", "pytest.ini", ...
        self.source = source  # for Settings: "command line --netguard-mode", ...
        self.kind = kind
        self.item_suffix = item_suffix  # after the [N] of a rule's source: " in pytest.ini"

    def error(self, expected: str) -> ConfigError:
        return ConfigError(
            f"{self.label}={self.value!r} from {self.where}: {expected}", source=self.source
        )


def resolve(
    cli: Mapping[str, object],
    env: Mapping[str, str],
    ini: Mapping[str, object],
    *,
    rootdir: Path,
    inifile: Path | str | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every row of :data:`OPTIONS` from its sources into :class:`Settings`.

    ``cli`` and ``ini`` map option names (``"mode"``, ``"allow"``, ...) to the values pytest
    gives (``config.getoption(opt.dest)``, ``config.getini(opt.ini)``; ``None`` or a missing
    key means not given); ``env`` is the environment (``os.environ``), read by the
    ``NETGUARD_*`` names of the table. ``inifile`` names the ini file in messages and
    sources; ``cwd`` defaults to the current directory.

    Precedence, per option: command line > environment > ini > default. The first source
    that gives a value wins and the lower ones are ignored -- for ``allow`` too: the rules
    of a higher source *replace* those of lower ones (several ``--netguard-allow`` flags
    add up among themselves), so a CI job can narrow what the ini file allows; the rules of
    the allowlist file, itself a setting resolved the same way, are always added to the
    ``allow`` rules.

    Unset values: an empty (or blank) environment variable is unset, and so are an empty
    ini value and ``None``. On the command line an empty value is an error for the
    choices, the booleans and ``database_safety_prefix``, and *sets* the lists (``allow``,
    ``database_safety_vars``, ``database_safety_hosts``) and the paths (``allowlist``,
    ``report``) to nothing, overriding the lower sources.

    Relative paths (``allowlist``, ``report``) are relative to ``rootdir`` when they come
    from the ini file, and to ``cwd`` when they come from the command line or the
    environment.

    Raises :class:`ConfigError` for any invalid value, naming its source; ``TypeError``
    for a ``cli`` or ``ini`` key that is not an option name (a bug in the caller).
    """
    for mapping, what in ((cli, "cli"), (ini, "ini")):
        unknown = sorted(set(mapping) - set(_BY_NAME))
        if unknown:
            raise TypeError(f"resolve(): unknown option names in {what}: {', '.join(unknown)}")
    rootdir = Path(rootdir)
    base_cwd = Path.cwd() if cwd is None else Path(cwd)
    ini_where = _display(Path(inifile), rootdir, base_cwd) if inifile is not None else None

    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        raw = _pick(opt, cli.get(opt.name), env.get(opt.env), ini.get(opt.name), ini_where)
        base = rootdir if raw.kind == "ini" else base_cwd
        values[opt.name] = _convert(opt, raw, base)
        sources[opt.name] = raw.source

    allow = values["allow"]
    rules: list[Rule] = list(allow) if isinstance(allow, tuple) else []
    allowlist = values["allowlist"]
    report = values["report"]
    if isinstance(allowlist, Path):
        display = _display(allowlist, rootdir, base_cwd)
        rules.extend(load_allowlist(allowlist, display=display))
    return Settings(
        mode=str(values["mode"]),
        default_size=str(values["default_size"]),
        allow_rules=tuple(rules),
        allowlist=allowlist if isinstance(allowlist, Path) else None,
        report=report if isinstance(report, Path) else None,
        verbose=bool(values["verbose"]),
        mode_source=sources["mode"],
        default_size_source=sources["default_size"],
        allow_source=sources["allow"],
        allowlist_source=sources["allowlist"],
        report_source=sources["report"],
        verbose_source=sources["verbose"],
        native=bool(values["native"]),
        native_source=sources["native"],
        database_safety=bool(values["database_safety"]),
        database_safety_vars=tuple(values["database_safety_vars"]),  # type: ignore[arg-type]
        database_safety_hosts=tuple(values["database_safety_hosts"]),  # type: ignore[arg-type]
        database_safety_prefix=str(values["database_safety_prefix"]),
        database_safety_source=sources["database_safety"],
        database_safety_vars_source=sources["database_safety_vars"],
        database_safety_hosts_source=sources["database_safety_hosts"],
        database_safety_prefix_source=sources["database_safety_prefix"],
    )


def _display(path: Path, rootdir: Path, cwd: Path) -> str:
    """A path as messages show it: relative to rootdir when inside it, else absolute."""
    full = path if path.is_absolute() else cwd / path
    try:
        return full.relative_to(rootdir).as_posix()
    except ValueError:
        return str(full)


def _is_unset(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, str) and not v.strip() for v in value)
    return False


def _pick(
    opt: Option, cli_value: object, env_value: str | None, ini_value: object, ini_where: str | None
) -> _Raw:
    """The value of the highest source that gives one."""
    if cli_value is not None and not (isinstance(cli_value, (list, tuple)) and not cli_value):
        return _Raw(cli_value, opt.flag, "the command line", f"command line {opt.flag}", "cli")
    if env_value is not None and env_value.strip():
        return _Raw(env_value, opt.env, "the environment", f"environment {opt.env}", "env")
    if not _is_unset(ini_value):
        if ini_where is None:
            return _Raw(ini_value, opt.ini, "the ini file", f"ini {opt.ini}", "ini")
        return _Raw(
            ini_value,
            opt.ini,
            ini_where,
            f"ini {opt.ini} in {ini_where}",
            "ini",
            item_suffix=f" in {ini_where}",
        )
    return _Raw(opt.default, opt.name, "the defaults", "default", "default")


def _convert(opt: Option, raw: _Raw, base: Path) -> object:
    if raw.kind == "default":
        return opt.default
    if opt.kind == "choice":
        return _convert_choice(opt, raw)
    if opt.kind == "bool":
        return _convert_bool(raw)
    if opt.kind == "path":
        return _convert_path(opt, raw, base)
    if opt.kind in ("names", "text"):
        return _convert_words(opt, raw)
    return _convert_rules(raw)


def _convert_words(opt: Option, raw: _Raw) -> tuple[str, ...] | str:
    """A ``names`` list (split like rules: commas and whitespace) or one ``text`` word."""
    value = raw.value
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise raw.error(f"expected {opt.expected}")
    texts = [item for item in items if isinstance(item, str)]
    if len(texts) != len(items):
        raise raw.error(f"expected {opt.expected}")
    words = [w for text in texts for w in re.split(r"[\s,]+", text) if w]
    if opt.kind == "text":
        if len(words) != 1:
            raise raw.error(f"expected {opt.expected}")
    elif not words:
        # only the command line gets here (an empty value): it sets an empty list
        return ()
    assert opt.pattern is not None
    for word in words:
        if not re.fullmatch(opt.pattern, word):
            raise raw.error(f"{word!r} is not valid: expected {opt.expected}")
    return words[0] if opt.kind == "text" else tuple(dict.fromkeys(words))


def _convert_choice(opt: Option, raw: _Raw) -> str:
    choices = opt.choices
    expected = "expected " + ", ".join(choices[:-1]) + " or " + choices[-1]
    value = raw.value
    if not isinstance(value, str):
        raise raw.error(expected)
    word = value.strip().lower()
    if word not in choices:
        raise raw.error(expected)
    return word


def _convert_bool(raw: _Raw) -> bool:
    value = raw.value
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        result = parse_bool(value)
        if result is not None:
            return result
    raise raw.error(f"expected one of {_BOOL_WORDS} (any case)")


def _convert_path(opt: Option, raw: _Raw, base: Path) -> Path | None:
    value = raw.value
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise raw.error("expected a file path")
    text = value.strip()
    if not text:
        return None  # only the command line gets here: an explicit "no file"
    if "\x00" in text:
        raise raw.error("a path cannot contain a NUL character")
    path = base / text
    if path.is_dir():
        what = "an allowlist file" if opt.name == "allowlist" else "a file path"
        raise raw.error(f"{path} is a directory; expected {what}")
    if opt.name == "allowlist" and not path.is_file():
        reason = "does not exist" if not path.exists() else "is not a regular file"
        raise raw.error(f"the allowlist file {path} {reason}")
    return path


def _convert_rules(raw: _Raw) -> tuple[Rule, ...]:
    from netguard.rules import RuleError, parse_rule  # only when there are rules

    value = raw.value
    items: Sequence[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise raw.error("expected rules as a string or a list of strings")
    texts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise raw.error(f"expected rules as strings, not {type(item).__name__} {item!r}")
        texts.extend(split_rules(item))
    rules: list[Rule] = []
    for index, text in enumerate(texts, 1):
        source = f"{raw.label}[{index}]{raw.item_suffix}"
        try:
            rules.append(parse_rule(text, source=source))
        except RuleError as err:
            raise ConfigError(str(err), source=source) from err
    return tuple(rules)


# --------------------------------------------------------------------------- allowlists

#: The schema version of allowlist files this netguard reads.
ALLOWLIST_VERSION = 1
#: The keys an allowlist entry may have.
ALLOWLIST_KEYS = ("name", "family", "addr", "cidr", "host", "path", "port", "ports")
#: ``family`` values and the destination key each goes with.
ALLOWLIST_FAMILIES: Mapping[str, str] = {
    "inet": "an IPv4 addr or cidr",
    "inet6": "an IPv6 addr or cidr",
    "dns": "a host",
    "unix": "a path",
}
_DESTINATIONS = ("addr", "cidr", "host", "path")
_TOP_KEYS = ("version", "allowlist")


class _Located:
    """Line numbers found in an allowlist file's text (1-based); empty when unknown."""

    __slots__ = ("entries", "keys")

    def __init__(self) -> None:
        self.entries: list[int] = []  # the line of each entry, in order
        self.keys: dict[str, int] = {}  # the line of each top-level key


def load_allowlist(path: str | os.PathLike[str], *, display: str | None = None) -> list[Rule]:
    """Read an allowlist file and return its rules, one per entry, in file order.

    ``.yaml`` and ``.yml`` files are YAML (PyYAML, ``pip install netguard[yaml]``);
    anything else is TOML. ``display`` is how messages and rule sources name the file
    (default: ``path`` as given). Each rule's ``source`` is ``FILE:LINE`` (the line of its
    entry) and its ``name`` the entry's name. Every problem raises :class:`ConfigError`
    naming the file, the line and the offending text; see :func:`allowlist_from_data` for
    the schema.
    """
    shown = os.fspath(path) if display is None else display
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            f"{shown}: cannot read the allowlist file: {reason}", source=shown
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{shown}:{line}: not UTF-8 text (byte {data[err.start]:#04x})",
            source=f"{shown}:{line}",
        ) from None
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        parsed, located = _read_yaml(text, shown)
    else:
        parsed, located = _read_toml(text, shown)
    return allowlist_from_data(
        parsed, file=shown, entry_lines=located.entries, key_lines=located.keys
    )


def _syntax_error(file: str, text: str, fmt: str, line: int | None, message: str) -> ConfigError:
    if line is None:
        return ConfigError(f"{file}: {fmt} syntax error: {message}", source=file)
    lines = text.splitlines()
    shown = f"\n    {lines[line - 1].strip()}" if 0 < line <= len(lines) else ""
    return ConfigError(
        f"{file}:{line}: {fmt} syntax error: {message}{shown}", source=f"{file}:{line}"
    )


_TOML_POSITION = r"\(at line (\d+), column \d+\)|\(at end of document\)"


def _read_toml(text: str, file: str) -> tuple[object, _Located]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        line: int | None = getattr(err, "lineno", None)  # 3.14+
        match = re.search(_TOML_POSITION, message)
        if match:
            message = message[: match.start()].rstrip()
            if line is None:
                line = int(match.group(1)) if match.group(1) else text.count("\n") + 1
        raise _syntax_error(file, text, "TOML", line, message) from None
    return parsed, _toml_lines(text)


_TOML_TOKEN = "|".join(
    (
        r"(?P<nl>\n)",
        r"(?P<skip>[ \t\r]+|#[^\n]*)",
        r'(?P<str>"""(?:\\.|[^\\])*?"""(?!")'
        r"|'''.*?'''(?!')"
        r'|"(?:\\.|[^"\\\n])*"'
        r"|'[^'\n]*')",
        r"(?P<punct>[\[\]{}=,])",
        r"(?P<bare>[^\s\[\]{}=,#\"']+)",
    )
)


def _toml_key(tokens: Sequence[tuple[str, str, int]]) -> str:
    """The text of a key made of bare and quoted tokens, quotes removed (roughly)."""
    return "".join(t[1][1:-1] if t[0] == "str" else t[1] for t in tokens)


def _toml_lines(text: str) -> _Located:
    """Find the line of each allowlist entry and of each top-level key in valid TOML.

    Entries are ``[[allowlist]]`` headers or the inline tables of a top-level
    ``allowlist = [...]`` array. Only called on text that tomllib accepted.
    """
    tokens: list[tuple[str, str, int]] = []
    line = 1
    for match in re.finditer(_TOML_TOKEN, text, re.DOTALL):
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "skip":
            tokens.append((kind, value, line))
        line += value.count("\n")
    located = _Located()
    in_root = True
    depth = 0
    entries_depth = 0  # depth inside the top-level allowlist array (0: not in it)
    line_start = True
    i = 0
    while i < len(tokens):
        kind, value, line = tokens[i]
        i += 1
        if kind == "nl":
            line_start = line_start or depth == 0
            continue
        if depth == 0 and line_start:
            line_start = False
            if value == "[":  # a table header: [name] or [[name]]
                array = i < len(tokens) and tokens[i][1] == "["
                i += 1 if array else 0
                start = i
                while i < len(tokens) and tokens[i][1] != "]":
                    i += 1
                key = _toml_key(tokens[start:i])
                i += 2 if array else 1
                if in_root:
                    located.keys.setdefault(key.partition(".")[0], line)
                in_root = False
                if array and key == "allowlist":
                    located.entries.append(line)
                continue
            start = i - 1
            while i < len(tokens) and tokens[i][1] != "=":
                i += 1
            key = _toml_key(tokens[start:i])
            i += 1
            if in_root:
                located.keys.setdefault(key.partition(".")[0], line)
                if key == "allowlist" and i < len(tokens) and tokens[i][1] == "[":
                    entries_depth = 1
            continue
        if value in ("[", "{"):
            if value == "{" and entries_depth and depth == entries_depth:
                located.entries.append(line)
            depth += 1
        elif value in ("]", "}"):
            depth -= 1
            if depth < entries_depth:
                entries_depth = 0
    return located


def _read_yaml(text: str, file: str) -> tuple[object, _Located]:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ConfigError(
            f"{file}: reading a YAML allowlist needs PyYAML: pip install netguard[yaml] "
            "(or write the allowlist in TOML)",
            source=file,
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None)
        context = getattr(err, "context", None)
        message = ": ".join(str(p) for p in (context, problem) if p) or str(err).splitlines()[0]
        raise _syntax_error(file, text, "YAML", line, message) from None
    located = _Located()
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            located.keys.setdefault(str(key_node.value), key_node.start_mark.line + 1)
            if key_node.value == "allowlist" and isinstance(value_node, yaml.SequenceNode):
                located.entries = [item.start_mark.line + 1 for item in value_node.value]
    return parsed, located


def allowlist_from_data(
    data: object,
    *,
    file: str,
    entry_lines: Sequence[int] = (),
    key_lines: Mapping[str, int] | None = None,
) -> list[Rule]:
    """Check a parsed allowlist document and build its rules.

    ``data`` is what ``tomllib.loads`` or ``yaml.safe_load`` returned for ``file``;
    ``entry_lines`` the line of each entry (used when there is one per entry; else every
    entry is placed at the line of the ``allowlist`` key) and ``key_lines`` the line of
    each top-level key, for messages and rule sources (``FILE:LINE``).

    The schema (netaudit's)::

        version = 1                     # required, the integer 1
        [[allowlist]]                   # zero or more entries, in order
        name = "payments-api"           # required, unique, non-empty
        family = "inet"                 # optional: inet, inet6, dns or unix (checked)
        cidr = "10.20.0.0/16"           # exactly one of addr, cidr, host, path
        ports = [443, "8000-8100"]      # optional: port (an int) or ports

    ``addr`` is one IP address, ``cidr`` an address block (``10.0.0.0/8``,
    ``2001:db8::/32``), ``host`` a name (``api.example.com``, ``*.example.com``), ``path``
    a unix socket path glob (``/run/*.sock``, ``@abstract``). ``port`` is an integer;
    ``ports`` a list of integers and ``"80,443"`` / ``"8000-8100"`` strings, or one such
    string; a ``path`` takes no ports; without them any port is allowed. ``family``, when
    given, must match the destination: ``inet`` an IPv4 ``addr``/``cidr``, ``inet6`` an
    IPv6 one, ``dns`` a ``host``, ``unix`` a ``path``.

    Each entry becomes one rule whose text is built from its fields and parsed by
    :func:`netguard.rules.parse_rule` (the one grammar).
    """
    keys = key_lines or {}

    def top_error(key: str | None, message: str) -> ConfigError:
        line = keys.get(key) if key is not None else None
        where = f"{file}:{line}" if line is not None else file
        return ConfigError(f"{where}: {message}", source=where)

    if data is None:
        raise top_error(
            None, f"the file is empty; expected version = {ALLOWLIST_VERSION} and an allowlist"
        )
    if not isinstance(data, Mapping):
        raise top_error(
            None,
            f"expected a table/mapping with version and allowlist at the top, "
            f"not {_type_name(data)}",
        )
    for key in data:
        if key not in _TOP_KEYS and key not in _NETAUDIT_IGNORED:
            raise top_error(
                str(key),
                f"unknown top-level key {key!r}{_did_you_mean(key, _TOP_KEYS)}; "
                "expected version and allowlist",
            )
    if "version" not in data:
        raise top_error(None, f"missing version = {ALLOWLIST_VERSION} at the top of the file")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise top_error(
            "version", f"version must be the integer {ALLOWLIST_VERSION}, not {version!r}"
        )
    if version != ALLOWLIST_VERSION:
        raise top_error(
            "version",
            f"unsupported version {version}: this netguard reads version {ALLOWLIST_VERSION}",
        )
    if "allowlist" not in data:
        raise top_error(None, "missing allowlist (an array of entries; it may be empty)")
    entries = data["allowlist"]
    if not isinstance(entries, list):
        raise top_error(
            "allowlist",
            f"allowlist must be an array of tables ([[allowlist]]) / a list of mappings, "
            f"not {_type_name(entries)}",
        )
    if len(entry_lines) != len(entries):
        # Lines unknown (an entry that is not a table, or no text given): fall back to the
        # line of the allowlist key, or to the file alone.
        fallback = keys.get("allowlist")
        entry_lines = [fallback] * len(entries) if fallback is not None else []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for index, raw_entry in enumerate(entries, 1):
        where = f"{file}:{entry_lines[index - 1]}" if entry_lines else file
        entry = _from_netaudit(raw_entry)
        if entry is None:
            continue  # a netlink entry: netguard never judges netlink sockets
        rule = _entry_rule(entry, index, where)
        name = rule.name or ""
        if name in seen:
            raise ConfigError(
                f"{where}: entry {name!r}: duplicate name (first used at {seen[name]})",
                source=where,
            )
        seen[name] = where
        rules.append(rule)
    return rules


# netaudit's spellings of the same schema, read as netguard's (docs/migration.md).
_NETAUDIT_FAMILIES = {"AF_INET": "inet", "AF_INET6": "inet6", "AF_UNIX": "unix"}
_NETAUDIT_IGNORED = frozenset({"includes_builtins"})


def _from_netaudit(entry: object) -> object:
    """An entry in netaudit's spelling as netguard's; None for one to skip (netlink)."""
    if not isinstance(entry, Mapping):
        return entry
    family = entry.get("family")
    if family == "AF_NETLINK":
        return None
    if (
        not any(key in entry for key in ("path_glob", "path_prefix", *_NETAUDIT_IGNORED))
        and family not in _NETAUDIT_FAMILIES
    ):
        return entry
    out = {k: v for k, v in entry.items() if k not in _NETAUDIT_IGNORED}
    if family in _NETAUDIT_FAMILIES:
        out["family"] = _NETAUDIT_FAMILIES[family]
    if "path" not in out:
        if isinstance(out.get("path_glob"), str) and "path_prefix" not in out:
            out["path"] = out.pop("path_glob")
        elif isinstance(out.get("path_prefix"), str) and "path_glob" not in out:
            out["path"] = out.pop("path_prefix") + "*"
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _did_you_mean(word: object, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _entry_rule(entry: object, index: int, where: str) -> Rule:
    from netguard.rules import RuleError, parse_rule

    """Check one allowlist entry and build its rule."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{where}: allowlist entry {index} must be a table/mapping, not {_type_name(entry)}",
            source=where,
        )
    name = entry.get("name")
    label = f"entry {name!r}" if isinstance(name, str) and name.strip() else f"entry {index}"

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{where}: {label}: {message}", source=where)

    for key in entry:
        if key not in ALLOWLIST_KEYS:
            raise fail(
                f"unknown key {key!r}{_did_you_mean(key, ALLOWLIST_KEYS)}; "
                f"accepted keys: {', '.join(ALLOWLIST_KEYS)}"
            )
    if "name" not in entry:
        raise fail('missing name (every entry needs a unique name = "...")')
    if not isinstance(name, str):
        raise fail(f"name must be a string, not {_type_name(name)}")
    if not name.strip():
        raise fail("name must not be empty")
    for key in ("family", "addr", "cidr", "host", "path"):
        if key in entry and not isinstance(entry[key], str):
            raise fail(f"{key} must be a string, not {_type_name(entry[key])}")

    given = [k for k in _DESTINATIONS if k in entry]
    if not given:
        raise fail("no destination: give one of addr, cidr, host or path")
    if len(given) > 1:
        shown = " and ".join(repr(entry[k]) for k in given)
        raise fail(f"both {' and '.join(given)} given ({shown}); give exactly one")
    key = given[0]
    dest: str = entry[key]
    ports = _entry_ports(entry, key, fail)

    if key == "path":
        if dest[:5].lower() == "unix:":
            raise fail(f"path {dest!r}: write the path without 'unix:'")
        text = "unix:" + dest
    else:
        _check_destination(key, dest, where, fail)
        if ports is None:
            text = dest
        elif ":" in dest:  # IPv6
            text = f"[{dest}]:{ports}"
        else:
            text = f"{dest}:{ports}"
    try:
        rule = parse_rule(text, source=where, name=name)
    except RuleError as err:
        raise fail(f"invalid rule {err.text!r} (built from this entry): {err.reason}") from None

    family = entry.get("family")
    if family is not None:
        if family not in ALLOWLIST_FAMILIES:
            raise fail(
                f"family {family!r}{_did_you_mean(family, ALLOWLIST_FAMILIES)}: expected "
                + ", ".join(ALLOWLIST_FAMILIES)
            )
        actual = {"host": "dns", "path": "unix"}.get(key) or ("inet6" if ":" in dest else "inet")
        if family != actual:
            raise fail(
                f"family {family!r} does not match {key} {dest!r} "
                f"(family {family!r} takes {ALLOWLIST_FAMILIES[family]}; this is {actual!r})"
            )
    return rule


def _check_destination(key: str, dest: str, where: str, fail: _Fail) -> None:
    """Check that ``dest`` alone is what ``key`` promises, for messages that say so."""
    from netguard.rules import RuleError, parse_rule

    try:
        alone = parse_rule(dest, source=where)
    except RuleError as err:
        raise fail(f"{key} {dest!r}: {err.reason}") from None
    if dest.startswith("["):
        raise fail(f"{key} {dest!r}: write the address without brackets")
    if alone.ports is not None or (alone.kind == "host" and ":" in dest):
        raise fail(f"{key} {dest!r}: give the port in port or ports, not in {key}")
    if key == "addr":
        if alone.kind != "ip":
            raise fail(f"addr {dest!r} is not an IP address (use host for a name)")
        if "/" in dest:
            raise fail(f"addr {dest!r} is a block (use cidr for an address block)")
    elif key == "cidr":
        if alone.kind != "ip":
            raise fail(f"cidr {dest!r} is not an address block such as 10.0.0.0/8")
        if "/" not in dest:
            raise fail(f"cidr {dest!r} has no prefix length (use addr for one address)")
    elif alone.kind != "host":
        raise fail(f"host {dest!r} is an IP address (use addr or cidr)")


def _entry_ports(entry: Mapping[Any, Any], key: str, fail: _Fail) -> str | None:
    """The port list text of an entry, or ``None`` for any port."""
    has_port, has_ports = "port" in entry, "ports" in entry
    if not (has_port or has_ports):
        return None
    if has_port and has_ports:
        raise fail(
            f"both port and ports given ({entry['port']!r} and {entry['ports']!r}); give one"
        )
    if key == "path":
        given = "port" if has_port else "ports"
        raise fail(f"{given} given with a path: unix sockets have no ports")
    if has_port:
        port = entry["port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise fail(
                f"port must be an integer, not {_type_name(port)} (use ports for a list or range)"
            )
        if not 0 <= port <= 65535:
            raise fail(f"port {port} is out of range 0-65535")
        return str(port)
    ports = entry["ports"]
    items = [ports] if isinstance(ports, (str, int)) and not isinstance(ports, bool) else ports
    if not isinstance(items, list):
        raise fail(
            f'ports must be a list of integers and "80,443"/"8000-8100" strings, '
            f"not {_type_name(ports)}"
        )
    if not items:
        raise fail("ports is empty (leave it out to allow any port)")
    texts: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise fail(f"ports item {item!r} is not an integer or a string")
        if isinstance(item, int) and not 0 <= item <= 65535:
            raise fail(f"port {item} is out of range 0-65535")
        text = re.sub(r"\s*([,-])\s*", r"\1", str(item).strip())
        if not text:
            raise fail("ports has an empty string")
        texts.append(text)
    return ",".join(texts)
