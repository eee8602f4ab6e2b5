"""The production-safety gate: database and cache URLs that do not look like test resources.

A test suite that finds ``DATABASE_URL`` pointing at a real database can destroy data that
no network rule protects: the database may well be on loopback, or allowed by a rule. With
``--netguard-database-safety`` (or ``NETGUARD_DATABASE_SAFETY=1``, or the ini key) the
plugin checks every environment variable named like a database or cache URL before
anything is collected, and stops the session when one does not look like a test resource.
Outside pytest, :func:`check_url` and :func:`check_environment` do the same checks.

A URL passes when

- its **host** is local: loopback (``127.0.0.0/8``, ``::1``, ``localhost`` and names under
  ``.localhost``), a unix socket (no host, a socket path as the host, or a socket given in
  the query), one of the local service names (default ``localhost``, ``db``, ``redis``,
  ``postgres``: the names of containers next to the tests), or covered by the session's
  allow rules (on the URL's port, or the scheme's default port);
- and, for SQL databases and MongoDB, its **database name** starts with the test prefix
  (default ``test_``) or ends with ``_test``.

Redis URLs are checked for their host only; SQLite URLs always pass (a file). A URL that
cannot be parsed, or whose scheme is not one of :data:`SCHEMES`, fails: the gate never lets
through what it cannot judge.

No message, exception or attribute of this module carries a password: URLs are shown by
:func:`redact`, which replaces the password of the user info and the values of
password-like query parameters with ``***``, and hides everything between ``://`` and the
last ``@`` it cannot parse.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

from netguard.config import DATABASE_SAFETY_HOSTS, DATABASE_SAFETY_PREFIX, DATABASE_SAFETY_VARS

if TYPE_CHECKING:
    from netguard.rules import Rule

__all__ = [
    "DEFAULT_LOCAL_HOSTS",
    "DEFAULT_PREFIX",
    "DEFAULT_VARIABLES",
    "SCHEMES",
    "SUFFIX",
    "ParsedURL",
    "UnsafeEnvironmentError",
    "UnsafeURLError",
    "check_environment",
    "check_url",
    "parse_url",
    "redact",
]

#: The environment variables checked by default (shell-style patterns, case-sensitive).
DEFAULT_VARIABLES: tuple[str, ...] = DATABASE_SAFETY_VARS
#: Host names that count as local by default: services running next to the tests.
DEFAULT_LOCAL_HOSTS: tuple[str, ...] = DATABASE_SAFETY_HOSTS
#: A test database's name starts with this prefix by default ...
DEFAULT_PREFIX = DATABASE_SAFETY_PREFIX
#: ... or ends with this suffix.
SUFFIX = "_test"

# kinds of URL
_SQL = "sql"
_MONGODB = "mongodb"
_REDIS = "redis"
_SQLITE = "sqlite"

#: Every scheme the gate reads (before any ``+driver``), its kind and its default port.
SCHEMES: Mapping[str, tuple[str, int | None]] = {
    "postgres": (_SQL, 5432),
    "postgresql": (_SQL, 5432),
    "mysql": (_SQL, 3306),
    "mariadb": (_SQL, 3306),
    "sqlite": (_SQLITE, None),
    "redis": (_REDIS, 6379),
    "rediss": (_REDIS, 6379),
    "unix": (_REDIS, None),  # redis-py's unix:///path/to/redis.sock
    "redis+socket": (_REDIS, None),  # kombu's redis+socket:///path/to/redis.sock
    "mongodb": (_MONGODB, 27017),
    "mongodb+srv": (_MONGODB, None),
}
# Schemes whose "+" is part of the scheme, not a driver.
_WHOLE = ("mongodb+srv", "redis+socket")
_SOCKET_SCHEMES = ("unix", "redis+socket")
# Query parameters that name a unix socket (libpq's host=/dir, MySQL drivers' unix_socket).
_SOCKET_PARAMS = ("unix_socket", "unix_socket_path", "socket")
# Query parameters whose values are redacted.
_SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "auth", "sslpassword", "apikey"}
)
_HIDDEN = "***"

_RULE_MALFORMED = "malformed URL"
_RULE_SCHEME = "supported scheme"
_RULE_HOST = "local host"
_RULE_DATABASE = "test database name"


class UnsafeURLError(ValueError):
    """A URL that does not look like a test resource, or that cannot be judged.

    ``variable`` is the environment variable it came from (or ``None``), ``url`` the URL
    as :func:`redact` shows it, ``rule`` the check it broke (``"malformed URL"``,
    ``"supported scheme"``, ``"local host"``, ``"test database name"``) and ``reason`` what
    was wrong. No attribute holds the password.
    """

    def __init__(self, url: str, rule: str, reason: str, *, variable: str | None = None) -> None:
        self.url = url
        self.rule = rule
        self.reason = reason
        self.variable = variable
        what = variable if variable is not None else "the URL"
        super().__init__(f"{what}: {reason}\n  url:  {url}\n  rule: {rule}: {_RULE_TEXT[rule]}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.url, self.rule, self.reason, self.variable))


def _rebuild(
    cls: type[UnsafeURLError], url: str, rule: str, reason: str, variable: str | None
) -> UnsafeURLError:
    return cls(url, rule, reason, variable=variable)


_RULE_TEXT = {
    _RULE_MALFORMED: "a URL the gate cannot parse is not judged safe",
    _RULE_SCHEME: "the gate reads " + ", ".join(SCHEMES) + " (with +driver)",
    _RULE_HOST: (
        "the host must be loopback, a unix socket, a local service name, or allowed by the "
        "session's allow rules"
    ),
    _RULE_DATABASE: f"the database name must start with the test prefix or end with {SUFFIX}",
}


class UnsafeEnvironmentError(ValueError):
    """One or more environment variables hold a URL that is not a test resource.

    ``errors`` holds one :class:`UnsafeURLError` per variable, in name order.
    """

    def __init__(self, errors: Sequence[UnsafeURLError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        head = (
            "netguard database safety: "
            + ("an environment variable holds" if count == 1 else f"{count} variables hold")
            + " a URL that does not look like a test resource; no test was run"
        )
        body = "\n".join("- " + str(e).replace("\n", "\n  ") for e in self.errors)
        fix = (
            "fix: point the variable at a test database or service (a local host, a name "
            "starting with the prefix or ending with _test), unset it, or configure the "
            "gate: --netguard-database-safety-vars, --netguard-database-safety-hosts, "
            "--netguard-database-safety-prefix, --netguard-allow (docs/safety.md)"
        )
        super().__init__(f"{head}\n{body}\n{fix}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errors,))


# --------------------------------------------------------------------------- redaction


def redact(url: str) -> str:
    """``url`` with its password and password-like query values replaced by ``***``.

    >>> redact("postgresql://app:s3cret@db.example.com:5432/app?sslpassword=x&sslmode=require")
    'postgresql://app:***@db.example.com:5432/app?sslpassword=***&sslmode=require'

    Everything between ``://`` and the last ``@`` is user info: a password holding an
    unencoded ``@``, ``/`` or ``?`` stays hidden (at worst, more than the password is).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        # not a URL at all: show its scheme-like head only, if any
        head = url.partition(":")[0]
        return f"{head}:{_HIDDEN}" if ":" in url else _HIDDEN
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:{_HIDDEN}@{rest}" if colon else f"{user}@{rest}"
    head, qmark, query = rest.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        parts = []
        for piece in query.split("&"):
            name, eq, _value = piece.partition("=")
            if eq and unquote(name).lower() in _SECRET_PARAMS:
                piece = f"{name}={_HIDDEN}"
            parts.append(piece)
        rest = f"{head}?{'&'.join(parts)}{hash_}{fragment}"
    return f"{scheme}://{rest}"


# --------------------------------------------------------------------------- parsing


class ParsedURL:
    """What the gate reads from a URL: see :func:`parse_url`."""

    __slots__ = ("database", "hosts", "kind", "scheme", "socket", "url")

    def __init__(
        self,
        url: str,
        scheme: str,
        kind: str,
        hosts: tuple[tuple[str, int | None], ...],
        socket: bool,
        database: str | None,
    ) -> None:
        self.url = url  #: the URL, redacted
        self.scheme = scheme  #: the scheme without its +driver ("postgresql")
        self.kind = kind  #: "sql", "mongodb", "redis" or "sqlite"
        self.hosts = hosts  #: (host, port or None) of every host named, in order
        self.socket = socket  #: a unix socket (counts as local)
        self.database = database  #: the database name, or None (redis, sqlite, none given)

    def __repr__(self) -> str:
        return (
            f"ParsedURL({self.url!r}, kind={self.kind!r}, hosts={self.hosts!r}, "
            f"socket={self.socket}, database={self.database!r})"
        )


def parse_url(url: str, *, variable: str | None = None) -> ParsedURL:
    """Read scheme, hosts, ports, socket and database name from a database or cache URL.

    :class:`UnsafeURLError` (rule ``"malformed URL"`` or ``"supported scheme"``) when the
    URL cannot be read; its message shows the URL redacted.
    """
    shown = redact(url)

    def malformed(reason: str) -> UnsafeURLError:
        return UnsafeURLError(shown, _RULE_MALFORMED, reason, variable=variable)

    text = url.strip()
    scheme_text, sep, rest = text.partition("://")
    if not sep or not scheme_text:
        raise malformed("not a URL (expected scheme://...)")
    full_scheme = scheme_text.lower()
    scheme = full_scheme if full_scheme in _WHOLE else full_scheme.partition("+")[0]
    if scheme not in SCHEMES:
        raise UnsafeURLError(
            shown,
            _RULE_SCHEME,
            f"the scheme {scheme_text!r} is not one the gate can judge",
            variable=variable,
        )
    if any(ch.isspace() for ch in text):
        raise malformed("a URL cannot contain whitespace")
    kind, default_port = SCHEMES[scheme]
    # The user info ends at the last "@" (as redact() has it): no part of a password,
    # whatever characters it holds, is read as a host, a port or a name below. (An "@"
    # in a query value must then be written %40, or the URL fails closed.)
    rest = rest.rpartition("@")[2]
    rest, _, _fragment = rest.partition("#")
    authority_and_path, _, query_text = rest.partition("?")
    authority, slash, path = authority_and_path.partition("/")
    try:
        query = parse_qsl(query_text, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise malformed("its query string cannot be read") from None
    params: dict[str, str] = {}
    for name, value in query:
        params.setdefault(name.lower(), value)

    if kind == _SQLITE:
        return ParsedURL(shown, scheme, kind, (), False, None)

    hosts: list[tuple[str, int | None]] = []
    socket = scheme in _SOCKET_SCHEMES
    if not socket:
        for piece in authority.split(",") if authority else ():
            host, port = _split_host_port(piece, default_port, malformed)
            if kind == _MONGODB and scheme == "mongodb+srv":
                port = None
            hosts.append((host, port))
        if kind == _MONGODB and not hosts:
            raise malformed("a MongoDB URL names at least one host")
        if kind == _MONGODB and scheme == "mongodb+srv" and len(hosts) != 1:
            raise malformed("a mongodb+srv URL names exactly one host")
        if kind == _SQL:
            # libpq: ?host= overrides the authority (a directory is a socket); MySQL
            # drivers: ?unix_socket=
            query_hosts = params.get("host")
            if query_hosts:
                hosts = []
                for piece in query_hosts.split(","):
                    if piece.startswith("/") or piece.startswith("@"):
                        socket = True
                    elif piece:
                        hosts.append(_split_host_port(piece, default_port, malformed))
            if any(params.get(p) for p in _SOCKET_PARAMS) and all(
                h in ("", "localhost") for h, _ in hosts
            ):
                socket, hosts = True, []
        # a host that is a socket path (postgresql://%2Fvar%2Frun%2Fpostgresql/db)
        local_paths = [h for h, _ in hosts if h.startswith("/")]
        if local_paths:
            socket = True
            hosts = [(h, p) for h, p in hosts if not h.startswith("/")]
        if not hosts and not local_paths and not socket:
            socket = True  # no host at all: the client's default, a local socket
    database: str | None = None
    if kind in (_SQL, _MONGODB):
        database = unquote(path.strip("/")) if slash else ""
        if kind == _SQL and not database:
            database = params.get("dbname") or params.get("database") or ""
        database = database or None
    return ParsedURL(shown, scheme, kind, tuple(hosts), socket, database)


def _split_host_port(
    piece: str, default_port: int | None, fail: Callable[[str], UnsafeURLError]
) -> tuple[str, int | None]:
    """``(host, port)`` of one ``host[:port]`` or ``[v6][:port]``; ``fail`` makes the error."""
    if piece.startswith("["):
        end = piece.find("]")
        if end < 0:
            raise fail("an IPv6 address is missing its closing ']'")
        host, after = piece[1:end], piece[end + 1 :]
        if after and not after.startswith(":"):
            raise fail("unexpected text after an IPv6 address")
        port_text = after[1:] if after else ""
    else:
        host, colon, port_text = piece.partition(":")
        if colon and not port_text:
            raise fail("an empty port")
        if "]" in piece:
            raise fail("a ']' without '['")
    host = unquote(host)
    port = default_port
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise fail(f"the port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if not host:
        raise fail("an empty host in a list of hosts")
    return host, port


# --------------------------------------------------------------------------- checks


def _is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # the any-address connects to this machine (netguard's core judges it as loopback)
    return address.is_loopback or address.is_unspecified


def check_url(
    url: str,
    *,
    variable: str | None = None,
    local_hosts: Iterable[str] = DEFAULT_LOCAL_HOSTS,
    prefix: str = DEFAULT_PREFIX,
    allow: Iterable[str | Rule] = (),
) -> ParsedURL:
    """Check that ``url`` looks like a test resource; return what was read from it.

    ``local_hosts`` are names that count as local (compared without case);
    ``prefix`` is the start of a test database's name (``_test`` at its end also does);
    ``allow`` are netguard rules (``"db.ci.internal:5432"``, ``"10.0.0.0/8"``) whose
    destinations count as local too, as the session's allow rules do in the plugin.
    ``variable`` names the URL's environment variable in messages.

    :class:`UnsafeURLError` when it does not (or cannot be read), naming the rule it broke,
    with the URL redacted.
    """
    parsed = parse_url(url, variable=variable)
    if parsed.kind == _SQLITE:
        return parsed
    names = {h.lower().rstrip(".") for h in local_hosts}
    rules = tuple(allow)
    policy = None
    for host, port in parsed.hosts:
        if _is_loopback(host) or host.lower().rstrip(".") in names:
            continue
        if rules:
            if policy is None:
                from netguard._impl import Policy

                policy = Policy(rules, source="netguard.safety")
            if _allowed(policy, host, port):
                continue
        shown = f"[{host}]" if ":" in host else host
        raise UnsafeURLError(
            parsed.url,
            _RULE_HOST,
            f"the host {shown} is not local" + (" and no allow rule covers it" if rules else ""),
            variable=variable,
        )
    if parsed.kind in (_SQL, _MONGODB):
        name = parsed.database
        if name is None:
            raise UnsafeURLError(
                parsed.url,
                _RULE_DATABASE,
                "the URL names no database (name the test database explicitly)",
                variable=variable,
            )
        lowered = name.lower()
        if not (lowered.startswith(prefix.lower()) or lowered.endswith(SUFFIX)):
            raise UnsafeURLError(
                parsed.url,
                _RULE_DATABASE,
                f"the database {name!r} neither starts with {prefix!r} nor ends with {SUFFIX!r}",
                variable=variable,
            )
    return parsed


def _allowed(policy: object, host: str, port: int | None) -> bool:
    try:
        return bool(policy.allows(host, port))  # type: ignore[attr-defined]
    except ValueError:
        return False  # a host the policy cannot judge is not allowed


def check_environment(
    environ: Mapping[str, str] | None = None,
    *,
    variables: Iterable[str] = DEFAULT_VARIABLES,
    local_hosts: Iterable[str] = DEFAULT_LOCAL_HOSTS,
    prefix: str = DEFAULT_PREFIX,
    allow: Iterable[str | Rule] = (),
) -> dict[str, str]:
    """Check every variable of ``environ`` (default ``os.environ``) whose name matches one
    of the ``variables`` patterns (shell-style, case-sensitive), as :func:`check_url` does.

    Returns the checked variables and their URLs, redacted; an empty or blank variable is
    unset and not checked. :class:`UnsafeEnvironmentError` lists every variable that fails.
    """
    env = os.environ if environ is None else environ
    patterns = tuple(variables)
    local = tuple(local_hosts)
    rules = tuple(allow)
    checked: dict[str, str] = {}
    errors: list[UnsafeURLError] = []
    for name in sorted(env):
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        value = env[name]
        if not value.strip():
            continue
        try:
            parsed = check_url(value, variable=name, local_hosts=local, prefix=prefix, allow=rules)
        except UnsafeURLError as exc:
            errors.append(exc)
        else:
            checked[name] = parsed.url
    if errors:
        raise UnsafeEnvironmentError(errors)
    return checked
