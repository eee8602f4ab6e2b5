"""The database safety gate (netguard.safety and --netguard-database-safety).

URLs are judged without any network: nothing here connects or resolves. The plugin's gate
is tested through real pytest runs: it stops the session before collection, names the
variable, the redacted URL and the rule, and never prints a password.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import netguard
from netguard.safety import (
    DEFAULT_VARIABLES,
    SCHEMES,
    UnsafeEnvironmentError,
    UnsafeURLError,
    check_environment,
    check_url,
    parse_url,
    redact,
)
from pluginrun import NETGUARD_VARS, run

SECRET = "Pa55w0rd-Zq9"  # found nowhere in any output, ever

# --------------------------------------------------------------------------- check_url

SAFE = [
    # SQL databases on loopback, sockets or local service names, with test names
    "postgresql://app:Pa55w0rd-Zq9@localhost:5432/test_app",
    "postgres://app@127.0.0.1/app_test",
    "postgresql+psycopg://app:Pa55w0rd-Zq9@[::1]:5433/test_app",
    "postgresql+asyncpg://app@db/test_app",
    "postgresql://app@postgres:5432/test_app?sslmode=disable",
    "postgresql:///test_app",  # no host: the local socket
    "postgresql://%2Fvar%2Frun%2Fpostgresql/test_app",  # a socket directory as the host
    "postgresql://app@/test_app?host=/var/run/postgresql",
    "postgresql://app@prod.example.com/test_app?host=/tmp",  # ?host= overrides
    "postgresql://localhost?dbname=test_app",
    "mysql://root:Pa55w0rd-Zq9@localhost:3306/test_shop",
    "mysql+pymysql://root@127.0.0.2/shop_test",
    "mysql://root@localhost/test_x?unix_socket=/run/mysqld/mysqld.sock",
    "mariadb+mariadbconnector://u@db/test_x",
    "postgresql://u@LOCALHOST./TEST_APP",  # case and a trailing dot
    "postgresql://u@pg.localhost/test_app",  # names under .localhost are loopback
    "postgresql://u@[::ffff:127.0.0.1]/test_app",  # v4-mapped loopback
    # SQLite: always safe
    "sqlite://",
    "sqlite:////var/lib/app/production.db",
    "sqlite+pysqlite:///:memory:",
    # Redis: the host only
    "redis://localhost:6379/0",
    "redis://:Pa55w0rd-Zq9@redis:6379/3",
    "rediss://default:Pa55w0rd-Zq9@127.0.0.1:6380",
    "redis://",
    "unix:///run/redis/redis.sock?db=1",
    "redis+socket:///run/redis.sock",
    # MongoDB
    "mongodb://u:Pa55w0rd-Zq9@localhost:27017,127.0.0.1:27018/test_app?replicaSet=rs0",
    "mongodb+srv://u:Pa55w0rd-Zq9@db/app_test",
]

UNSAFE = [
    # (url, rule, a piece of the reason)
    ("postgresql://app:Pa55w0rd-Zq9@db.prod.example.com:5432/test_app", "local host",
     "db.prod.example.com is not local"),
    ("postgresql://app@localhost/app", "test database name",
     "'app' neither starts with 'test_' nor ends with '_test'"),
    ("postgresql://app@localhost", "test database name", "names no database"),
    ("postgresql://app@localhost/", "test database name", "names no database"),
    ("postgresql://app@localhost/testapp", "test database name", "'testapp'"),
    ("postgresql://app@192.0.2.10/test_app", "local host", "192.0.2.10 is not local"),
    ("postgresql://app@[2001:db8::1]:5432/test_app", "local host", "[2001:db8::1] is not local"),
    ("postgresql://app@localhost/test_app?host=db.prod.example.com", "local host",
     "db.prod.example.com"),
    ("postgresql://u@localhost,db.prod.example.com/test_app", "local host", "db.prod.example.com"),
    ("mysql://root:Pa55w0rd-Zq9@mysql.internal:3306/test_shop", "local host", "mysql.internal"),
    ("mysql://root@localhost/shop", "test database name", "'shop'"),
    ("mariadb://root@10.1.2.3/test_x", "local host", "10.1.2.3"),
    ("redis://:Pa55w0rd-Zq9@cache.prod.example.com:6379/0", "local host",
     "cache.prod.example.com"),
    ("rediss://10.0.0.8", "local host", "10.0.0.8"),
    ("mongodb://u:Pa55w0rd-Zq9@localhost,mongo2.example.com/test_app", "local host",
     "mongo2.example.com"),
    ("mongodb+srv://u:Pa55w0rd-Zq9@cluster0.example.mongodb.net/test_app", "local host",
     "cluster0.example.mongodb.net"),
    ("mongodb://localhost/app", "test database name", "'app'"),
    ("mongodb://localhost", "test database name", "names no database"),
    # what cannot be judged fails
    ("oracle://u:Pa55w0rd-Zq9@localhost/test_x", "supported scheme", "'oracle'"),
    ("mssql+pyodbc://u@localhost/test_x", "supported scheme", "'mssql+pyodbc'"),
    ("localhost:5432/test_app", "malformed URL", "not a URL"),
    ("host=localhost dbname=test_app", "malformed URL", "not a URL"),
    ("://localhost/test_app", "malformed URL", "not a URL"),
    ("postgresql://u@localhost:54x2/test_app", "malformed URL", "'54x2' is not a number"),
    ("postgresql://u@localhost:0/test_app", "malformed URL", "'0' is not a number"),
    ("postgresql://u@localhost:70000/test_app", "malformed URL", "'70000'"),
    ("postgresql://u@localhost:/test_app", "malformed URL", "an empty port"),
    ("postgresql://u@[::1/test_app", "malformed URL", "closing ']'"),
    ("postgresql://u@[::1]x/test_app", "malformed URL", "after an IPv6 address"),
    ("postgresql://u@localhost,/test_app", "malformed URL", "an empty host"),
    ("postgresql://u@local host/test_app", "malformed URL", "whitespace"),
    ("mongodb:///test_app", "malformed URL", "at least one host"),
    ("mongodb+srv://a,b/test_app", "malformed URL", "exactly one host"),
]  # fmt: skip


@pytest.mark.parametrize("url", SAFE)
def test_safe_urls_pass(url: str) -> None:
    parsed = check_url(url)
    assert SECRET not in parsed.url and SECRET not in repr(parsed)


@pytest.mark.parametrize(("url", "rule", "reason"), UNSAFE, ids=[u for u, _, _ in UNSAFE])
def test_unsafe_urls_fail_naming_the_rule(url: str, rule: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError) as info:
        check_url(url, variable="DATABASE_URL")
    err = info.value
    assert err.rule == rule
    assert reason in err.reason
    assert str(err).startswith(f"DATABASE_URL: {err.reason}\n  url:  {err.url}\n  rule: {rule}")
    assert SECRET not in str(err) and SECRET not in repr(err) and SECRET not in err.url
    # it survives pickling (pytest-xdist), still without the password
    again = pickle.loads(pickle.dumps(err))
    assert (again.url, again.rule, again.reason, again.variable) == (
        err.url,
        err.rule,
        err.reason,
        "DATABASE_URL",
    )


def test_every_scheme_is_covered() -> None:
    seen = {parse_url(u).scheme for u in SAFE} | {
        parse_url(u).scheme
        for u, rule, _ in UNSAFE
        if rule not in ("malformed URL", "supported scheme")
    }
    assert seen == set(SCHEMES)


def test_what_is_read_from_a_url() -> None:
    p = parse_url("postgresql+psycopg://u:x@[::1]:6000,db/test_a?sslmode=require")
    assert (p.scheme, p.kind, p.hosts, p.socket, p.database) == (
        "postgresql",
        "sql",
        (("::1", 6000), ("db", 5432)),
        False,
        "test_a",
    )
    p = parse_url("postgresql://%2Frun%2Fpg/test_a")
    assert p.socket and p.hosts == () and p.database == "test_a"
    p = parse_url("mongodb+srv://u@cluster.example/db_test")
    assert p.hosts == (("cluster.example", None),) and p.database == "db_test"
    p = parse_url("rediss://h:6380/2")
    assert (p.kind, p.hosts, p.database) == ("redis", (("h", 6380),), None)
    p = parse_url("sqlite:///x.db")
    assert (p.kind, p.hosts, p.database) == ("sqlite", (), None)


def test_local_hosts_prefix_and_allow_rules_are_configurable() -> None:
    url = "postgresql://u:Pa55w0rd-Zq9@pg-ci:5432/ci_app"
    with pytest.raises(UnsafeURLError, match="pg-ci is not local"):
        check_url(url, prefix="ci_")
    with pytest.raises(UnsafeURLError, match="'ci_app' neither starts with 'test_'"):
        check_url(url, local_hosts=["PG-CI"])
    check_url(url, local_hosts=["pg-ci"], prefix="ci_")
    # an allow rule covers the host on the URL's port (or the scheme's default port)
    remote = "postgresql://u@db.ci.example.com/test_app"
    check_url(remote, allow=["db.ci.example.com:5432"])
    check_url(remote, allow=["*.ci.example.com"])
    with pytest.raises(UnsafeURLError, match="and no allow rule covers it"):
        check_url(remote, allow=["db.ci.example.com:6432"])
    check_url("postgresql://u@192.0.2.7:6432/test_app", allow=["192.0.2.0/24:6432"])
    with pytest.raises(UnsafeURLError):
        check_url("postgresql://u@192.0.2.7/test_app", allow=["192.0.2.0/24:6432"])
    check_url("mongodb+srv://u@cluster.example/test_app", allow=["cluster.example"])


def test_redact() -> None:
    assert redact("postgresql://app:Pa55w0rd-Zq9@h/db") == "postgresql://app:***@h/db"
    assert redact("redis://:Pa55w0rd-Zq9@h:6379") == "redis://:***@h:6379"
    assert redact("postgresql://app@h/db") == "postgresql://app@h/db"
    assert redact("postgresql://h/db?sslmode=x&password=Pa55w0rd-Zq9&PassWord=y") == (
        "postgresql://h/db?sslmode=x&password=***&PassWord=***"
    )
    # unencoded "@", "/", "?", "#" in a password: everything up to the last "@" is hidden
    for password in ("p@ss/w?rd#1", "a@b@c", "x:y"):
        shown = redact(f"mysql://root:{password}@localhost/test_x")
        assert shown == "mysql://root:***@localhost/test_x"
    assert redact("user:Pa55w0rd-Zq9@host/db") == "user:***"
    assert redact("Pa55w0rd-Zq9") == "***"


URL_CHARS = st.characters(codec="ascii", exclude_categories=("Cc",))


@given(
    scheme=st.sampled_from([*SCHEMES, "postgresql+psycopg", "oracle", ""]),
    user=st.text(URL_CHARS, max_size=8),
    # "pw~" marks it: the fixed text of a message cannot contain the password by chance
    password=st.text(URL_CHARS, min_size=4, max_size=16)
    .filter(lambda p: "@" not in p)
    .map(lambda p: f"pw~{p}"),
    tail=st.text(URL_CHARS, max_size=30),
)
def test_no_message_shows_a_password(scheme: str, user: str, password: str, tail: str) -> None:
    # Whatever the URL around it, neither a pass nor a failure shows the password, as
    # long as it is delimited as URLs delimit it (user:password@); "@" in the tail
    # only hides more.
    assume(password not in tail and password not in user and password not in scheme)
    url = f"{scheme}://{user.replace(':', '')}:{password}@{tail}"
    texts: list[str] = [redact(url)]
    try:
        texts.append(repr(check_url(url, variable="X_DATABASE_URL")))
    except UnsafeURLError as err:
        texts += [str(err), repr(err), err.url, err.reason]
    for text in texts:
        assert password not in text


def test_check_environment_checks_matching_variables() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:Pa55w0rd-Zq9@localhost/test_a",
        "ANALYTICS_DATABASE_URL": "postgresql://u@localhost/app_test",
        "REDIS_URL": "redis://localhost",
        "CACHE_REDIS_URL": "",  # empty: unset
        "database_url": "postgresql://u@db.prod.example.com/app",  # case-sensitive: not checked
        "DATABASE_URL_RO": "postgresql://u@db.prod.example.com/app",  # not a match
        "HOME": "/root",
    }
    checked = check_environment(env)
    assert checked == {
        "ANALYTICS_DATABASE_URL": "postgresql://u@localhost/app_test",
        "DATABASE_URL": "postgresql://u:***@localhost/test_a",
        "REDIS_URL": "redis://localhost",
    }
    assert check_environment(env, variables=["HOME_*"]) == {}
    with pytest.raises(UnsafeEnvironmentError) as info:
        check_environment(env, variables=[*DEFAULT_VARIABLES, "DATABASE_URL_*"])
    [err] = info.value.errors
    assert err.variable == "DATABASE_URL_RO" and err.rule == "local host"


def test_check_environment_lists_every_failure() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:Pa55w0rd-Zq9@db.prod.example.com/app",
        "REDIS_URL": "redis://:Pa55w0rd-Zq9@cache.prod.example.com",
        "OTHER_DATABASE_URL": "not a url Pa55w0rd-Zq9",
    }
    with pytest.raises(UnsafeEnvironmentError) as info:
        check_environment(env)
    assert [e.variable for e in info.value.errors] == [
        "DATABASE_URL",
        "OTHER_DATABASE_URL",
        "REDIS_URL",
    ]
    text = str(info.value)
    assert text.startswith("netguard database safety: 3 variables hold a URL")
    assert "- DATABASE_URL: the host db.prod.example.com is not local" in text
    assert "\n    url:  postgresql://u:***@db.prod.example.com/app" in text
    assert SECRET not in text
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == text


def test_public_access() -> None:
    assert netguard.safety.check_url is check_url


# --------------------------------------------------------------------------- the plugin


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("DATABASE_URL", "REDIS_URL", "APP_DATABASE_URL", *NETGUARD_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NETGUARD_DATABASE_SAFETY", raising=False)
    pytester.makepyfile(
        conftest="COLLECTED = []\n",
        test_a="import conftest\nconftest.COLLECTED.append(1)\n\ndef test_a():\n    pass\n",
    )
    return pytester


def _no_secret(result: pytest.RunResult) -> None:
    assert SECRET not in "\n".join(result.outlines + result.errlines)


@pytest.mark.parametrize("mode", ["off", "strict"])
def test_gate_stops_the_session_before_collection(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db.prod.example.com/app")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@localhost:6379/0")
    result = run(suite, f"--netguard-mode={mode}", "--netguard-database-safety", "-v")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: netguard database safety: an environment variable holds a URL that does "
            "not look like a test resource; no test was run",
            "- DATABASE_URL: the host db.prod.example.com is not local",
            "    url:  postgresql://app:***@db.prod.example.com/app",
            "    rule: local host: *",
            "fix: *",
        ]
    )
    assert "collected" not in result.stdout.str()
    _no_secret(result)


def test_gate_passes_test_resources(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@localhost/test_app")
    monkeypatch.setenv("APP_DATABASE_URL", "sqlite:///prod.db")
    monkeypatch.setenv("NETGUARD_DATABASE_SAFETY", "1")
    result = run(suite)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["netguard: off (default); database URLs checked"])
    result = run(suite, "--netguard-mode=strict")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["netguard: mode strict, *, database URLs checked, *"])
    _no_secret(result)


def test_gate_is_off_by_default(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db.prod.example.com/app")
    run(suite).assert_outcomes(passed=1)
    run(suite, "--netguard-mode=strict").assert_outcomes(passed=1)


def test_gate_settings_from_ini(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DB", f"mysql://root:{SECRET}@mysql-ci/ci_shop")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.ci.example.com:5432/test_app")
    suite.makeini(
        """
        [pytest]
        netguard_database_safety = true
        netguard_database_safety_vars = APP_DB DATABASE_URL
        netguard_database_safety_hosts =
            mysql-ci
        netguard_database_safety_prefix = ci_
        netguard_allow = db.ci.example.com:5432
        """
    )
    # DATABASE_URL's name does not start with ci_ and does not end with _test
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*- DATABASE_URL: the database 'test_app' neither starts*"])
    result.stderr.no_fnmatch_line("*APP_DB*")
    # the command line wins over the ini file
    result = run(suite, "--netguard-database-safety-prefix=test_")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*- APP_DB: the database 'ci_shop' neither starts*"])
    _no_secret(result)
    result = run(suite, "--netguard-database-safety-vars=APP_DB")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--netguard-database-safety=maybe"],
            "*argument --netguard-database-safety: ignored explicit argument 'maybe'*",
        ),
        (
            ["--netguard-database-safety-prefix="],
            "ERROR: netguard: --netguard-database-safety-prefix='' from the command line: "
            "expected a non-empty prefix without whitespace or '/'",
        ),
        (
            ["--netguard-database-safety-prefix=a/b"],
            "ERROR: netguard: --netguard-database-safety-prefix='a/b' from the command line: "
            "'a/b' is not valid: expected a non-empty prefix without whitespace or '/'",
        ),
        (
            ["--netguard-database-safety-vars=DB-URL;x"],
            "ERROR: netguard: --netguard-database-safety-vars=?'DB-URL;x'? from the command "
            "line: 'DB-URL;x' is not valid: expected environment variable names*",
        ),
        (
            ["--netguard-database-safety-hosts=db/1"],
            "ERROR: netguard: --netguard-database-safety-hosts=?'db/1'? from the command line: "
            "'db/1' is not valid: expected host names*",
        ),
    ],
)
def test_gate_settings_errors(suite: pytest.Pytester, args: list[str], message: str) -> None:
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_gate_env_errors_name_the_variable(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETGUARD_DATABASE_SAFETY", "perhaps")
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: netguard: NETGUARD_DATABASE_SAFETY='perhaps' from the environment: expected*"]
    )


def test_gate_under_xdist(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"rediss://default:{SECRET}@cache.prod.example.com:6380")
    result = run(suite, "-n", "2", "--netguard-database-safety")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*- REDIS_URL: the host cache.prod.example.com is not local*"])
    _no_secret(result)


# One passing and one failing URL per scheme, through a real pytest run each.
PER_SCHEME = {
    "postgres": ("postgres://u:{pw}@localhost/test_a", "postgres://u:{pw}@pg.example.com/test_a"),
    "postgresql": ("postgresql+psycopg://u:{pw}@db/a_test", "postgresql://u:{pw}@db/a"),
    "mysql": ("mysql+pymysql://u:{pw}@127.0.0.1/test_a", "mysql://u:{pw}@10.0.0.1/test_a"),
    "mariadb": ("mariadb://u:{pw}@[::1]/test_a", "mariadb://u:{pw}@localhost/prod"),
    "sqlite": ("sqlite:////srv/{pw}.db", "sqlite:/{pw}"),  # the failure: not a URL
    "redis": ("redis://:{pw}@redis:6379/0", "redis://:{pw}@cache.example.com:6379/0"),
    "rediss": ("rediss://u:{pw}@127.0.0.1", "rediss://u:{pw}@198.51.100.7"),
    "unix": ("unix:///run/redis.sock?password={pw}", "unix:/run/{pw}.sock"),
    "redis+socket": ("redis+socket:///run/redis.sock", "redis+socket:/x?password={pw}"),
    "mongodb": ("mongodb://u:{pw}@localhost/test_a", "mongodb://u:{pw}@localhost/admin"),
    "mongodb+srv": ("mongodb+srv://u:{pw}@db/test_a", "mongodb+srv://u:{pw}@c.example.net/test_a"),
}


@pytest.mark.parametrize("scheme", sorted(PER_SCHEME))
def test_gate_per_scheme(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    assert set(PER_SCHEME) == set(SCHEMES)
    for name in (*DEFAULT_VARIABLES, *NETGUARD_VARS):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    good, bad = (u.format(pw=SECRET) for u in PER_SCHEME[scheme])
    monkeypatch.setenv("APP_DATABASE_URL", good)
    result = pytester.runpytest_inprocess("--netguard-database-safety", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    monkeypatch.setenv("APP_DATABASE_URL", bad)
    result = pytester.runpytest_inprocess("--netguard-database-safety", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: netguard database safety: *", "- APP_DATABASE_URL: *"])
    _no_secret(result)
