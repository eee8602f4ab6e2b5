"""Sizes x rules -> compiled policies (netguard.policy), and the marker helpers.

The size semantics are checked on real compiled policies of both implementations (the
``impl`` fixture), statically with ``allows()`` and, for the basics, through the hooks
with ``netguard.guard()`` on loopback. ``matching_rule`` (pure Python) is checked against
the compiled policies with hypothesis. The marker helpers are pure functions; ``marker_data``
is checked on real pytest items through ``pytester``.
"""

from __future__ import annotations

import ipaddress
import pickle
import socket
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import netguard
from netguard import _impl
from netguard import _netguard as _c_module  # noqa: F401  (a broken build fails here)
from netguard.policy import (
    DEFAULT_SIZE,
    SIZES,
    CompiledPolicyInfo,
    MarkerData,
    MarkerError,
    PolicySet,
    ResolvedMarkers,
    allow_network_from_markers,
    resolve_markers,
    rules_from_marker,
    rules_from_markers,
    size_from_markers,
)
from netguard.rules import Rule, RuleError, parse_rule

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)
AF_UNIX = int(socket.AF_UNIX)
IMPLS = ("c", "python")
WHERE = "tests/test_x.py::test_y"
MARKER_SOURCE = f"@pytest.mark.netguard(allow=...) on {WHERE}"


def rules(*texts: str, source: str = "--netguard-allow") -> tuple[Rule, ...]:
    return tuple(parse_rule(t, source=source) for t in texts)


def check(info: CompiledPolicyInfo, cases: Sequence[tuple[str, int | None]], want: bool) -> None:
    """Every case is allowed (want=True) or denied by ``info``'s compiled policy."""
    wrong = [(host, port) for host, port in cases if info.allows(host, port) is not want]
    verb = "allows" if not want else "denies"
    assert not wrong, f"{info} {verb} {wrong}"


# --------------------------------------------------------------------------- sizes

LOOPBACK_CONNECTS: list[tuple[str, int | None]] = [
    ("127.0.0.1", 80),
    ("127.255.255.254", 65535),
    ("127.1", 8080),  # read as the kernel reads it: 127.0.0.1
    ("2130706433", 8080),
    ("::1", 80),
    ("[::1]", 443),
    ("::1%lo", 80),
    ("::ffff:127.0.0.1", 80),  # v4-mapped loopback
    ("0.0.0.0", 80),  # the any-address as a destination: this host
    ("::", 80),
    ("::ffff:0.0.0.0", 80),
]
OUTSIDE_CONNECTS: list[tuple[str, int | None]] = [
    ("192.0.2.1", 443),
    ("198.51.100.7", 80),
    ("2001:db8::1", 443),
    ("::ffff:192.0.2.1", 443),
    ("128.0.0.1", 80),
    ("126.255.255.255", 80),
    ("::2", 80),
]
UNIX_PATHS: list[tuple[str, int | None]] = [
    ("unix:/tmp/x", None),
    ("unix:/run/postgresql/.s.PGSQL.5432", None),
    ("unix:@abs", None),
]
LOCALHOST_NAMES: list[tuple[str, int | None]] = [
    ("a.localhost", None),
    ("db.app.localhost", None),
    ("A.LocalHost.", None),
]
OUTSIDE_NAMES: list[tuple[str, int | None]] = [
    ("example.com", None),
    ("localhost.example.com", None),
    ("notlocalhost", None),
]


def test_sizes_constant() -> None:
    assert SIZES == ("small", "medium", "large", "xlarge")
    assert DEFAULT_SIZE == "small"


def test_small_denies_everything_but_the_lookup_of_localhost(impl: _impl.Impl) -> None:
    info = PolicySet(impl=impl).for_test("small")
    assert info.implementation == impl.name
    assert not info.allow_all
    check(info, LOOPBACK_CONNECTS + OUTSIDE_CONNECTS + UNIX_PATHS, want=False)
    check(info, LOCALHOST_NAMES + OUTSIDE_NAMES, want=False)
    check(info, [("localhost", None), ("LOCALHOST", None), ("localhost.", None)], want=True)
    # DNS_LOCALHOST allows the lookup only: no connection by name either.
    check(info, [("localhost", 80), ("localhost", 0)], want=False)
    assert info.compiled.flags == _impl.DNS_LOCALHOST
    assert info.compiled_rules == ()


def test_medium_allows_loopback_unix_and_localhost_names(impl: _impl.Impl) -> None:
    info = PolicySet(impl=impl).for_test("medium")
    assert not info.allow_all
    check(info, LOOPBACK_CONNECTS + UNIX_PATHS, want=True)
    check(info, [("localhost", None), ("localhost", 5432), *LOCALHOST_NAMES], want=True)
    check(info, [("a.localhost", 6379)], want=True)
    check(info, OUTSIDE_CONNECTS + OUTSIDE_NAMES, want=False)


@pytest.mark.parametrize("size", ["large", "xlarge"])
def test_large_and_xlarge_allow_everything(impl: _impl.Impl, size: str) -> None:
    info = PolicySet(impl=impl).for_test(size)
    assert info.allow_all
    assert info.compiled.flags & _impl.ALLOW_ALL
    check(info, LOOPBACK_CONNECTS + OUTSIDE_CONNECTS + UNIX_PATHS, want=True)
    check(info, LOCALHOST_NAMES + OUTSIDE_NAMES + [("example.com", 443)], want=True)


@pytest.mark.parametrize("size", SIZES)
def test_allow_network_allows_everything_in_every_size(impl: _impl.Impl, size: str) -> None:
    policies = PolicySet(rules("192.0.2.0/24"), impl=impl)
    info = policies.for_test(size, allow_network=True)
    assert info.allow_all and info.allow_network and info.size == size
    check(info, LOOPBACK_CONNECTS + OUTSIDE_CONNECTS + UNIX_PATHS + OUTSIDE_NAMES, want=True)
    assert info.compiled is policies.for_test("large").compiled


def test_config_rules_extend_medium_large_xlarge_but_not_small(impl: _impl.Impl) -> None:
    config = rules("192.0.2.0/24:443", "api.example.com", "unix:/run/db.sock", "2001:db8::/32")
    policies = PolicySet(config, impl=impl)
    allowed_by_config = [
        ("192.0.2.1", 443),
        ("::ffff:192.0.2.1", 443),
        ("2001:db8::1", 80),
        ("api.example.com", None),
        ("api.example.com", 8443),
    ]
    medium = policies.for_test("medium")
    check(medium, allowed_by_config, want=True)
    check(medium, LOOPBACK_CONNECTS, want=True)  # still everything medium allows
    check(medium, [("192.0.2.1", 80), ("www.example.com", None)], want=False)
    assert medium.rules[-len(config) :] == config

    small = policies.for_test("small")
    check(small, [*allowed_by_config, ("unix:/run/db.sock", None)], want=False)
    assert not set(config) & set(small.rules)
    for size in ("large", "xlarge"):
        assert set(config) <= set(policies.for_test(size).rules)


def test_extra_rules_extend_small(impl: _impl.Impl) -> None:
    policies = PolicySet(rules("192.0.2.0/24"), impl=impl)
    extra = rules("127.0.0.1:8080", "unix:/tmp/app.sock", "api.example.com:443", source="m")
    info = policies.for_test("small", extra)
    check(info, [("127.0.0.1", 8080), ("unix:/tmp/app.sock", None)], want=True)
    check(info, [("api.example.com", None), ("api.example.com", 443)], want=True)
    check(info, [("127.0.0.1", 8081), ("::1", 8080), ("unix:/tmp/other.sock", None)], False)
    check(info, [("api.example.com", 80), ("192.0.2.1", 443)], want=False)  # no config
    assert info.extra == extra
    assert info.compiled_rules == extra


def test_extra_rules_extend_medium_on_top_of_config_rules(impl: _impl.Impl) -> None:
    policies = PolicySet(rules("192.0.2.0/24:443"), impl=impl)
    info = policies.for_test("medium", rules("198.51.100.7:25", source="m"))
    check(info, [("192.0.2.9", 443), ("198.51.100.7", 25), ("127.0.0.1", 1)], want=True)
    check(info, [("198.51.100.7", 26), ("192.0.2.9", 25)], want=False)


def test_a_destination_is_allowed_when_any_rule_covers_address_and_port(
    impl: _impl.Impl,
) -> None:
    # DESIGN.md: 10.0.0.0/8:443 plus 10.1.0.0/16:80 allows 10.1.2.3:443, across layers too.
    info = PolicySet(rules("10.0.0.0/8:443"), impl=impl).for_test(
        "medium", rules("10.1.0.0/16:80", source="m")
    )
    check(info, [("10.1.2.3", 443), ("10.1.2.3", 80), ("10.2.0.1", 443)], want=True)
    check(info, [("10.2.0.1", 80)], want=False)


DOCS_TABLE = [
    # docs/sizes.md, "How the layers combine", with --netguard-allow=192.0.2.0/24:443
    (("small", [], False), [False, False, False, False]),
    (("small", ["198.51.100.7:25"], False), [False, False, True, False]),
    (("medium", [], False), [True, True, False, False]),
    (("medium", ["api.example.com:443"], False), [True, True, False, True]),
    (("large", [], False), [True, True, True, True]),
    (("small", [], True), [True, True, True, True]),
]


@pytest.mark.parametrize(("test", "expected"), DOCS_TABLE)
def test_the_example_table_of_the_docs(
    impl: _impl.Impl, test: tuple[str, list[str], bool], expected: list[bool]
) -> None:
    size, allow, allow_network = test
    policies = PolicySet(rules("192.0.2.0/24:443"), impl=impl)
    info = policies.for_test(size, rules_from_marker((), {"allow": allow}, WHERE), allow_network)
    got = [
        info.allows("127.0.0.1", 5432),
        info.allows("192.0.2.7", 443),
        info.allows("198.51.100.7", 25),
        info.allows("api.example.com"),
    ]
    assert got == expected


def test_builtin_rules_are_named_and_sourced(impl: _impl.Impl) -> None:
    config = rules("192.0.2.1")
    extra = rules("198.51.100.1", source=MARKER_SOURCE)
    info = PolicySet(config, impl=impl).for_test("medium", extra)
    builtin = [r for r in info.rules if r.source == "size medium"]
    assert [str(r) for r in builtin][:5] == [
        "127.0.0.0/8",
        "::1",
        "unix:*",
        "localhost",
        "*.localhost",
    ]
    assert all(r.name for r in builtin)
    assert info.rules[len(builtin) :] == config + extra  # size, config, extra: that order
    assert info.compiled_rules == tuple(builtin[:5]) + config + extra

    small = PolicySet(config, impl=impl).for_test("small")
    assert {r.source for r in small.rules} == {"size small"}
    assert str(small.rules[0]) == "localhost"

    large = PolicySet(config, impl=impl).for_test("large")
    assert [str(r) for r in large.rules] == ["0.0.0.0/0", "::/0", "unix:*", "*", "192.0.2.1"]
    assert large.compiled_rules == ()


def test_the_netguard_policy_works_with_guard(
    impl: _impl.Impl, loopback_tcp: tuple[str, int]
) -> None:
    policies = PolicySet(impl=impl)
    small, medium = policies.for_test("small"), policies.for_test("medium")
    assert isinstance(medium.policy, netguard.Policy)
    assert medium.policy.implementation == impl.name
    with netguard.guard(medium.policy, test=WHERE, size="medium"):
        socket.create_connection(loopback_tcp, timeout=5).close()
    with pytest.raises(netguard.NetworkViolationError) as caught:
        with netguard.guard(small.policy, test=WHERE, size="small"):
            socket.create_connection(loopback_tcp, timeout=5).close()
    assert caught.value.size == "small"
    assert caught.value.destination == f"127.0.0.1:{loopback_tcp[1]}"
    with netguard.guard(small.policy):
        assert socket.getaddrinfo("localhost", None)  # the lookup of localhost: allowed


def test_policies_round_trip_through_bytes(impl: _impl.Impl) -> None:
    # The native shim and child processes get the compiled blob.
    info = PolicySet(rules("192.0.2.0/24:443"), impl=impl).for_test("medium")
    copy = impl.from_bytes(info.compiled.to_bytes())
    for host, port in LOOPBACK_CONNECTS + OUTSIDE_CONNECTS + [("192.0.2.5", 443)]:
        assert copy.allows(host, port) == info.allows(host, port), (host, port)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("size", ["tiny", "Small", "", "enormous", None, 1])
def test_unknown_size_names_the_accepted_ones(size: Any) -> None:
    with pytest.raises(ValueError, match=r"small, medium, large or xlarge") as caught:
        PolicySet(impl=_impl.load("python")).for_test(size)
    assert repr(size) in str(caught.value)


def test_bad_rule_containers_are_type_errors() -> None:
    with pytest.raises(TypeError, match="single str"):
        PolicySet("127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parse_rule"):
        PolicySet(["127.0.0.1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not 5"):
        PolicySet(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="impl"):
        PolicySet(impl="c")  # type: ignore[arg-type]
    policies = PolicySet(impl=_impl.load("python"))
    with pytest.raises(TypeError, match=r"extra rules .*str: '1'"):
        policies.for_test("small", "127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="extra rules"):
        policies.for_test("small", [None])  # type: ignore[list-item]
    assert policies.compile_count == 0


# --------------------------------------------------------------------------- caching


def counting(impl: _impl.Impl) -> tuple[_impl.Impl, list[tuple[int, bool]]]:
    """A copy of ``impl`` whose compile() records (number of rules, allow_all)."""
    calls: list[tuple[int, bool]] = []

    def compile_rules(rules: Sequence[Rule], **kwargs: Any) -> Any:
        calls.append((len(rules), kwargs.get("allow_all", False)))
        return impl.compile(rules, **kwargs)

    return impl.replace(compile=compile_rules), calls


def test_same_arguments_give_the_same_object(impl: _impl.Impl) -> None:
    policies = PolicySet(rules("192.0.2.1"), impl=impl)
    extra = rules("127.0.0.1:8080", source=MARKER_SOURCE)
    first = policies.for_test("small", extra)
    assert policies.for_test("small", list(extra)) is first
    assert policies.for_test("small", extra, False) is first
    assert policies.for_test("small", extra, allow_network=True) is not first
    assert policies.for_test("medium") is policies.for_test("medium", ())
    assert policies.for_test("large") is not policies.for_test("xlarge")
    assert policies.for_test("large").compiled is policies.for_test("xlarge").compiled


def test_a_session_of_5000_tests_compiles_a_handful(impl: _impl.Impl) -> None:
    counted, calls = counting(impl)
    policies = PolicySet(rules("192.0.2.0/24:443", "api.example.com"), impl=counted)
    assert calls == [] and policies.compile_count == 0
    seen: set[int] = set()
    for i in range(5000):
        test = f"tests/test_{i % 50}.py::test_{i}"
        size = SIZES[i % 4]
        # Every test's markers parse to rules with its own source, but only three rule
        # sets are distinct in what they allow.
        allow = [[], ["127.0.0.1:8080"], ["unix:/tmp/*.sock", "db.internal:5432"]][i % 3]
        extra = rules_from_marker((), {"allow": allow}, test)
        info = policies.for_test(size, extra, allow_network=i % 7 == 0)
        seen.add(id(info.compiled))
    # small x 3 rule sets, medium x 3, and one allow-all policy for the rest.
    assert len(calls) == policies.compile_count == len(seen) == 7
    assert calls.count((0, True)) == 1


def test_extra_rules_differing_only_in_source_share_the_compiled_policy(
    impl: _impl.Impl,
) -> None:
    counted, calls = counting(impl)
    policies = PolicySet(impl=counted)
    a = policies.for_test("small", rules_from_marker((), {"allow": ["[::1]:80"]}, "t.py::a"))
    b = policies.for_test("small", rules_from_marker((), {"allow": ["[0:0::1]:80"]}, "t.py::b"))
    assert a is not b
    assert a.compiled is b.compiled and a.policy is b.policy
    assert len(calls) == 1
    # Each info keeps its own rules, so a report names the right test.
    assert a.extra[0].source.endswith("on t.py::a")
    assert b.extra[0].source.endswith("on t.py::b")


def test_order_and_duplicates_of_rules_do_not_compile_again(impl: _impl.Impl) -> None:
    counted, calls = counting(impl)
    policies = PolicySet(impl=counted)
    x, y = rules("192.0.2.1", "198.51.100.1", source="m")
    policies.for_test("small", [x, y])
    policies.for_test("small", [y, x])
    policies.for_test("small", [x, y, x])
    assert len(calls) == 1


def test_precompile_compiles_the_plain_policy_of_every_size(impl: _impl.Impl) -> None:
    counted, calls = counting(impl)
    policies = PolicySet(rules("192.0.2.1"), impl=counted)
    policies.precompile()
    assert sorted(calls) == [(0, False), (0, True), (6, False)]
    for size in SIZES:
        policies.for_test(size)
    assert len(calls) == 3
    assert "compiled=3" in repr(policies)


def test_the_implementation_is_chosen_on_first_use(impl: _impl.Impl) -> None:
    policies = PolicySet()
    assert "not chosen yet" in repr(policies)
    info = policies.for_test("medium")
    assert policies.impl is impl  # the current one (the fixture made it current)
    assert info.implementation == impl.name
    assert f"impl={impl.name!r}" in repr(policies)


def test_info_is_frozen_and_its_repr_is_short(impl: _impl.Impl) -> None:
    many = tuple(parse_rule(f"10.{i // 256}.{i % 256}.0/24", source="f") for i in range(2000))
    info = PolicySet(many, impl=impl).for_test("medium", allow_network=True)
    with pytest.raises(AttributeError, match="frozen"):
        info.size = "large"  # type: ignore[misc]
    text = repr(info)
    assert len(text) < 200, text
    assert "size='medium'" in text and "allow_network" in text and "rules=2011" in text


# --------------------------------------------------------------------------- matching_rule


def test_matching_rule_names_the_size_rule_first(impl: _impl.Impl) -> None:
    config = rules("127.0.0.1:8080", "192.0.2.0/24:443")
    extra = rules("192.0.2.7:443", "198.51.100.7", source=MARKER_SOURCE)
    info = PolicySet(config, impl=impl).for_test("medium", extra)

    rule = info.matching_rule("connect", AF_INET, "127.0.0.1", 8080)
    assert (str(rule), rule and rule.source, rule and rule.name) == (
        "127.0.0.0/8",
        "size medium",
        "IPv4 loopback",
    )
    rule = info.matching_rule("connect", AF_INET, "192.0.2.7", 443)
    assert rule is config[1]  # the config layer already allows it
    assert info.matching_rule("sendto", AF_INET, "198.51.100.7", 53) is extra[1]
    assert info.matching_rule("connect", AF_INET, "198.51.100.8", 53) is None
    rule = info.matching_rule("connect", AF_INET6, "::ffff:127.0.0.2", 1)
    assert str(rule) == "127.0.0.0/8"
    rule = info.matching_rule("connect", AF_INET6, "::", 1)
    assert rule is not None and rule.name == "IPv6 loopback"
    rule = info.matching_rule("connect", AF_UNIX, "\x00abstract", None)
    assert rule is not None and rule.name == "AF_UNIX sockets"
    rule = info.matching_rule("getaddrinfo", 0, "Cache.LocalHost.", 6379)
    assert rule is not None and rule.name == "names under .localhost"


def test_matching_rule_for_lookups_and_names(impl: _impl.Impl) -> None:
    extra = rules("localhost:8080", "api.example.com:443", source=MARKER_SOURCE)
    small = PolicySet(impl=impl).for_test("small", extra)
    lookup = small.matching_rule("getaddrinfo", 0, "localhost", None)
    assert lookup is not None and lookup.source == "size small"
    assert lookup not in small.compiled_rules  # the DNS_LOCALHOST flag, not a rule
    # A name given to connect: the rule that covers name and port beats the lookup flag.
    assert small.matching_rule("connect", 0, "localhost", 8080) is extra[0]
    # Only the lookup is allowed on another port (the address is judged on its own).
    assert small.matching_rule("connect", 0, "localhost", 9090) is lookup
    # getaddrinfo's port does not matter for the lookup.
    assert small.matching_rule("getaddrinfo", 0, "localhost", 9090) is lookup
    assert small.matching_rule("getaddrinfo", 0, "api.example.com", 80) is extra[1]
    assert small.matching_rule("connect", 0, "api.example.com", 80) is extra[1]
    assert small.matching_rule("gethostbyname", 0, "example.com", None) is None
    # gethostbyaddr of a name is a lookup of that name.
    assert small.matching_rule("gethostbyaddr", 0, "localhost", None) is lookup
    assert small.matching_rule("connect", AF_INET, "127.0.0.1", 8080) is None


def test_matching_rule_for_idna_names(impl: _impl.Impl) -> None:
    extra = rules("xn--bcher-kva.example", source=MARKER_SOURCE)
    info = PolicySet(impl=impl).for_test("small", extra)
    assert info.allows("bücher.example")
    assert info.matching_rule("getaddrinfo", 0, "Bücher.example.", None) is extra[0]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"]
)
@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize("op", ["gethostbyaddr", "getnameinfo"])
def test_reverse_lookups_of_loopback_are_allowed_in_every_size(
    op: str, size: str, host: str
) -> None:
    info = PolicySet(impl=_impl.load("python")).for_test(size)
    rule = info.matching_rule(op, 0, host, None)
    assert rule is not None
    assert rule.source == f"size {size}"
    assert rule.name == "reverse lookups of loopback addresses"
    assert rule not in info.compiled_rules


def test_reverse_lookups_of_other_addresses_need_allow_all(impl: _impl.Impl) -> None:
    policies = PolicySet(rules("192.0.2.0/24", "example.com"), impl=impl)
    for size in ("small", "medium"):
        info = policies.for_test(size, rules("192.0.2.1", source="m"))
        assert info.matching_rule("gethostbyaddr", 0, "192.0.2.1", None) is None
        assert info.matching_rule("getnameinfo", 0, "2001:db8::1", None) is None
    for size in ("large", "xlarge"):
        rule = policies.for_test(size).matching_rule("gethostbyaddr", 0, "192.0.2.1", None)
        assert rule is not None and str(rule) == "*" and rule.source == f"size {size}"
    rule = policies.for_test("small", allow_network=True).matching_rule(
        "getnameinfo", 0, "2001:db8::1", None
    )
    assert rule is not None and rule.source == "@pytest.mark.allow_network"


def test_matching_rule_under_allow_all(impl: _impl.Impl) -> None:
    policies = PolicySet(rules("192.0.2.0/24"), impl=impl)
    large = policies.for_test("large")
    for event, text in [
        (("connect", AF_INET, "192.0.2.1", 443), "0.0.0.0/0"),
        (("connect", AF_INET, "127.0.0.1", 80), "0.0.0.0/0"),
        (("sendto", AF_INET6, "2001:db8::1", 53), "::/0"),
        (("sendmsg", AF_INET6, "::ffff:192.0.2.1", 53), "0.0.0.0/0"),
        (("connect", AF_UNIX, "/run/x.sock", None), "unix:*"),
        (("getaddrinfo", 0, "example.com", 443), "*"),
        (("connect", 0, "example.com", 443), "*"),
    ]:
        rule = large.matching_rule(*event)
        assert rule is not None and (str(rule), rule.source) == (text, "size large"), event

    medium = policies.for_test("medium", allow_network=True)
    rule = medium.matching_rule("connect", AF_INET, "127.0.0.1", 80)
    assert rule is not None and rule.source == "size medium"
    rule = medium.matching_rule("connect", AF_INET, "192.0.2.1", 80)
    assert rule is not None and rule.source == "--netguard-allow"
    rule = medium.matching_rule("connect", AF_INET, "198.51.100.1", 80)
    assert rule is not None and rule.source == "@pytest.mark.allow_network"
    assert str(rule) == "0.0.0.0/0" and rule.name == "any IPv4 address"


def test_matching_rule_errors() -> None:
    info = PolicySet(impl=_impl.load("python")).for_test("medium")
    with pytest.raises(ValueError, match="port is required"):
        info.matching_rule("connect", AF_INET, "127.0.0.1", None)
    with pytest.raises(ValueError, match="empty name"):
        info.matching_rule("getaddrinfo", 0, ".", None)
    netlink = getattr(socket, "AF_NETLINK", 16)
    with pytest.raises(ValueError, match="never judged"):
        info.matching_rule("sendto", netlink, "0", None)
    assert info.matching_rule("connect", AF_INET, "not an address", 80) is None


# ------------------------------------------------------------- matching_rule vs allows()

V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1
MAPPED = 0xFFFF << 32

HOSTS = [
    "api.example.com",
    "*.example.com",
    "db.internal",
    "*.internal",
    "localhost",
    "*.localhost",
]
NAMES = [
    "api.example.com",
    "API.Example.COM.",
    "www.example.com",
    "example.com",
    "db.internal",
    "a.b.internal",
    "internal",
    "localhost",
    "LOCALHOST.",
    "x.localhost",
    "localhost.example.com",
    "example.org",
]
GLOBS = ["/tmp/*", "/tmp/?.sock", "/run/db.sock", "@abs*", "/run/[ab]*", "*"]
PATHS = [
    "/tmp/a.sock",
    "/tmp/ab.sock",
    "/run/db.sock",
    "/run/b",
    "@abstract",
    "@x",
    "/x",
    "\x00abs",
]
PORTS = [0, 1, 22, 79, 80, 81, 443, 5432, 8080, 65535]

ports_text = st.one_of(
    st.just(""),
    st.sampled_from(["80", "443", "80,443", "8000-8100", "1-1024", "22,5432-5433"]),
)


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["v4", "v4", "v6", "mapped", "host", "unix"]))
    ports = draw(ports_text)
    if kind in ("v4", "mapped"):
        addr = draw(
            st.one_of(
                st.sampled_from([0x7F000001, 0xC0000201, 0xC6336407, 0x0A010203, 0]),
                st.integers(0, V4_MAX),
            )
        )
        plen = draw(st.sampled_from([0, 1, 8, 16, 24, 31, 32]))
        net = addr & ((V4_MAX << (32 - plen)) & V4_MAX)
        if kind == "v4":
            body = f"{ipaddress.IPv4Address(net)}/{plen}"
            return f"{body}:{ports}" if ports else body
        body = f"::ffff:{ipaddress.IPv4Address(net)}/{96 + plen}"
        return f"[{body}]:{ports}" if ports else body
    if kind == "v6":
        addr = draw(
            st.one_of(
                st.sampled_from([1, 0x20010DB8 << 96, (0x20010DB8 << 96) | 1, 0]),
                st.integers(0, V6_MAX),
            )
        )
        plen = draw(st.sampled_from([0, 16, 32, 64, 127, 128]))
        net = addr & ((V6_MAX << (128 - plen)) & V6_MAX)
        body = f"{ipaddress.IPv6Address(net)}/{plen}"
        return f"[{body}]:{ports}" if ports else body
    if kind == "host":
        host = draw(st.sampled_from(HOSTS))
        return f"{host}:{ports}" if ports else host
    return "unix:" + draw(st.sampled_from(GLOBS))


def v4_queries(data: st.DataObject, info: CompiledPolicyInfo) -> list[str]:
    """IPv4 addresses on and next to the edges of every rule, plus special ones."""
    values = {0, 1, 0x7F000001, 0x7FFFFFFF, 0x80000000, 0xC0000201, V4_MAX}
    for rule in info.rules:
        if rule.kind == "ip" and rule.family == 4:
            values.update(v for v in (rule.first - 1, rule.first, rule.last, rule.last + 1))
    values.add(data.draw(st.integers(0, V4_MAX)))
    texts = [str(ipaddress.IPv4Address(v)) for v in values if 0 <= v <= V4_MAX]
    texts += [f"::ffff:{t}" for t in texts[:4]]
    return texts


def v6_queries(data: st.DataObject, info: CompiledPolicyInfo) -> list[str]:
    values = {0, 1, 2, MAPPED | 0x7F000001, 0x20010DB8 << 96, V6_MAX}
    for rule in info.rules:
        if rule.kind == "ip" and rule.family == 6:
            values.update(v for v in (rule.first - 1, rule.first, rule.last, rule.last + 1))
    values.add(data.draw(st.integers(0, V6_MAX)))
    return [str(ipaddress.IPv6Address(v)) for v in values if 0 <= v <= V6_MAX]


def assert_rule_alone_allows(
    impl: _impl.Impl, rule: Rule, info: CompiledPolicyInfo, host: str, port: int | None
) -> None:
    """A compiled rule that matching_rule names allows the destination by itself."""
    if rule in info.compiled_rules:
        assert impl.compile([rule]).allows(host, port), (str(rule), host, port)


SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", IMPLS)
@SETTINGS
@given(
    config=st.lists(rule_texts(), max_size=6),
    extra=st.lists(rule_texts(), max_size=4),
    size=st.sampled_from(SIZES),
    allow_network=st.sampled_from([False, False, False, True]),
    data=st.data(),
)
def test_matching_rule_agrees_with_allows(
    name: str,
    config: list[str],
    extra: list[str],
    size: str,
    allow_network: bool,
    data: st.DataObject,
) -> None:
    impl = _impl.load(name)
    info = PolicySet(rules(*config), impl=impl).for_test(
        size, rules(*extra, source=MARKER_SOURCE), allow_network
    )
    note(repr(info))

    def agree(event: tuple[str, int, str, int | None], host: str, port: int | None) -> Rule | None:
        rule = info.matching_rule(*event)
        allowed = info.allows(host, port)
        assert (rule is not None) == allowed, (event, str(rule), allowed)
        if rule is not None:
            assert rule in info.rules
        return rule

    ports = {*data.draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3))}
    for each in info.rules:  # on and next to the edges of every port set
        for lo, hi in each.ports or ():
            ports.update(p for p in (lo - 1, lo, hi, hi + 1) if 0 <= p <= 65535)
    for port in sorted(ports):
        for host in v4_queries(data, info):
            family = AF_INET6 if ":" in host else AF_INET
            rule = agree(("connect", family, host, port), host, port)
            if rule is not None:
                assert_rule_alone_allows(impl, rule, info, host, port)
        for host in v6_queries(data, info):
            rule = agree(("sendto", AF_INET6, host, port), host, port)
            if rule is not None:
                assert_rule_alone_allows(impl, rule, info, host, port)
        for name_ in NAMES:
            # A lookup: the port does not matter.
            agree(("getaddrinfo", 0, name_, port), name_, None)
            # A name given to connect: the lookup, and whether a rule covers the port too.
            rule = agree(("connect", 0, name_, port), name_, None)
            # small's built-in "localhost" is the lookup flag: it covers no port.
            covers = rule is not None and (
                rule.host == "*"
                or (
                    rule.source != "size small"
                    and (rule.ports is None or any(lo <= port <= hi for lo, hi in rule.ports))
                )
            )
            assert covers == info.allows(name_, port), (name_, port, str(rule))
    for path in PATHS:
        shown = "@" + path[1:] if path.startswith("\x00") else path
        rule = agree(("connect", AF_UNIX, path, None), "unix:" + shown, None)
        if rule is not None:
            assert_rule_alone_allows(impl, rule, info, "unix:" + shown, None)


# --------------------------------------------------------------------------- size markers


def mark(level: str, name: str, *args: Any, **kwargs: Any) -> MarkerData:
    return (level, name, args, kwargs)


FUNC = WHERE
CLASS = "tests/test_x.py::TestX"
MODULE = "tests/test_x.py"


@pytest.mark.parametrize(
    ("markers", "default", "expected"),
    [
        ([], "small", "small"),
        ([], "medium", "medium"),
        ([mark(FUNC, "parametrize", "x", [1]), mark(FUNC, "skipif", False)], "large", "large"),
        ([mark(FUNC, "medium")], "small", "medium"),
        ([mark(MODULE, "large")], "small", "large"),
        ([mark(FUNC, "small"), mark(CLASS, "large")], "medium", "small"),
        ([mark(CLASS, "xlarge"), mark(MODULE, "small")], "small", "xlarge"),
        ([mark(FUNC, "medium"), mark(CLASS, "large"), mark(MODULE, "small")], "small", "medium"),
        ([mark(FUNC, "medium"), mark(FUNC, "medium")], "small", "medium"),
        # The closest level decides; a conflict further out does not concern this test.
        ([mark(FUNC, "medium"), mark(MODULE, "small"), mark(MODULE, "large")], "small", "medium"),
        ([mark(f"{FUNC} (parameters)", "large"), mark(FUNC, "small")], "small", "large"),
        ([mark(CLASS, "small"), mark(f"{CLASS} (from Base)", "large")], "small", "small"),
        ([mark(FUNC, "allow_network"), mark(MODULE, "medium")], "small", "medium"),
    ],
)
def test_size_from_markers(markers: list[MarkerData], default: str, expected: str) -> None:
    assert size_from_markers(markers, default, WHERE) == expected


def test_size_from_markers_takes_any_iterable() -> None:
    markers = iter([mark(FUNC, "large"), mark(MODULE, "small")])
    assert size_from_markers(markers, "small", WHERE) == "large"


def test_two_sizes_on_one_function_are_an_error_naming_test_and_markers() -> None:
    markers = [mark(FUNC, "small"), mark(FUNC, "large"), mark(MODULE, "medium")]
    with pytest.raises(MarkerError) as caught:
        size_from_markers(markers, "small", WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: conflicting size markers ")
    assert "@pytest.mark.small and @pytest.mark.large on tests/test_x.py::test_y" in message
    assert "medium" not in message
    assert caught.value.where == WHERE
    assert isinstance(caught.value, ValueError)


def test_two_sizes_on_one_class_are_an_error_naming_the_class() -> None:
    markers = [mark(CLASS, "medium"), mark(CLASS, "xlarge"), mark(CLASS, "small")]
    with pytest.raises(MarkerError, match="conflicting") as caught:
        size_from_markers(markers, "small", WHERE)
    assert (
        "@pytest.mark.medium, @pytest.mark.xlarge and @pytest.mark.small on "
        "tests/test_x.py::TestX" in str(caught.value)
    )


def test_a_size_marker_with_arguments_is_an_error() -> None:
    with pytest.raises(MarkerError, match=r"no arguments: @pytest.mark.medium\('db'\) on "):
        size_from_markers([mark(FUNC, "medium", "db")], "small", WHERE)
    with pytest.raises(MarkerError, match=r"@pytest.mark.large\(reason='x'\) on tests/test_x.py;"):
        size_from_markers([mark(FUNC, "small"), mark(MODULE, "large", reason="x")], "small", WHERE)


@pytest.mark.parametrize("default", ["tiny", "", None])
def test_a_bad_default_size_is_a_value_error(default: Any) -> None:
    with pytest.raises(ValueError, match=r"default size .* small, medium, large or xlarge"):
        size_from_markers([], default, WHERE)


def test_marker_error_pickles() -> None:
    with pytest.raises(MarkerError) as caught:
        size_from_markers([mark(FUNC, "small"), mark(FUNC, "large")], "small", WHERE)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is MarkerError
    assert (str(copy), copy.where, copy.reason) == (
        str(caught.value),
        caught.value.where,
        caught.value.reason,
    )


# --------------------------------------------------------------------------- rule markers


def test_rules_from_marker_parses_with_a_source_naming_test_and_marker() -> None:
    got = rules_from_marker((), {"allow": ["127.0.0.1:8080", "unix:/tmp/*.sock"]}, WHERE)
    assert [str(r) for r in got] == ["127.0.0.1:8080", "unix:/tmp/*.sock"]
    assert {r.source for r in got} == {MARKER_SOURCE}
    assert rules_from_marker((), {"allow": ("::1",)}, WHERE)[0].family == 6
    assert rules_from_marker((), {"allow": []}, WHERE) == ()
    assert rules_from_marker((), {}, WHERE) == ()
    ready = parse_rule("192.0.2.1", source="elsewhere")
    assert rules_from_marker((), {"allow": [ready]}, WHERE) == (ready,)


def test_a_bad_rule_in_a_marker_names_test_marker_and_rule() -> None:
    with pytest.raises(RuleError) as caught:
        rules_from_marker((), {"allow": ["127.0.0.1", "10.0.0.1/8"]}, WHERE)
    assert str(caught.value) == (
        f"{MARKER_SOURCE}: invalid rule '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?"
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (["127.0.0.1"],),
            {},
            r"@pytest.mark.netguard\(\['127.0.0.1'\]\): @pytest.mark.netguard takes keyword "
            r"arguments only; write @pytest.mark.netguard\(allow=\[RULE, ...\]\)",
        ),
        ((), {"alow": ["x"]}, r"unknown argument alow; @pytest.mark.netguard accepts allow="),
        ((), {"allow": [], "deny": [], "x": 1}, r"unknown argument deny and x"),
        ((), {"allow": "127.0.0.1"}, r"not a single str; write allow=\['127.0.0.1'\]"),
        ((), {"allow": b"::1"}, r"not a single bytes"),
        ((), {"allow": 8080}, r"allow takes a list of rules, not int"),
        ((), {"allow": [8080]}, r"a rule is a string, not int: 8080"),
        ((), {"allow": [None]}, r"a rule is a string, not NoneType"),
    ],
)
def test_bad_netguard_markers(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MarkerError, match=message) as caught:
        rules_from_marker(args, kwargs, WHERE)
    assert str(caught.value).startswith(f"{WHERE}: ")


def test_rules_from_markers_add_up_across_levels() -> None:
    markers = [
        mark(FUNC, "netguard", allow=["127.0.0.1:8080"]),
        mark(FUNC, "medium"),
        mark(CLASS, "netguard", allow=["unix:/tmp/*", "127.0.0.1:8080"]),
        mark(MODULE, "netguard", allow=["db.internal:5432"]),
    ]
    got = rules_from_markers(markers, WHERE)
    assert [str(r) for r in got] == ["127.0.0.1:8080", "unix:/tmp/*", "db.internal:5432"]
    assert rules_from_markers([mark(FUNC, "small")], WHERE) == ()


def test_allow_network_from_markers() -> None:
    assert allow_network_from_markers([mark(MODULE, "allow_network")], WHERE)
    assert not allow_network_from_markers([mark(FUNC, "large")], WHERE)
    with pytest.raises(MarkerError, match=r"@pytest.mark.allow_network\(False\) on "):
        allow_network_from_markers([mark(FUNC, "allow_network", False)], WHERE)


def test_resolve_markers_feeds_for_test(impl: _impl.Impl) -> None:
    markers = iter(
        [
            mark(FUNC, "netguard", allow=["192.0.2.1:443"]),
            mark(CLASS, "medium"),
            mark(MODULE, "large"),
        ]
    )
    resolved = resolve_markers(markers, default="small", where=WHERE)
    assert resolved == ResolvedMarkers(
        "medium", rules("192.0.2.1:443", source=MARKER_SOURCE), False
    )
    info = PolicySet(impl=impl).for_test(*resolved)
    assert info.allows("192.0.2.1", 443) and info.allows("127.0.0.1", 80)
    assert resolve_markers([], default="large", where=WHERE) == ("large", (), False)


# --------------------------------------------------------------------- marker_data on items

CONFTEST = """
import pytest
from netguard.policy import MarkerError, marker_data, resolve_markers
from netguard.rules import RuleError

LINES = []


def pytest_configure(config):
    for name in ("small", "medium", "large", "xlarge", "allow_network", "netguard(allow)"):
        config.addinivalue_line("markers", name + ": netguard")


def pytest_collection_modifyitems(items):
    for item in items:
        try:
            size, extra, allow_network = resolve_markers(
                marker_data(item), default="small", where=item.nodeid
            )
        except (MarkerError, RuleError) as exc:
            LINES.append(f"NG {item.nodeid} ERROR {exc}")
        else:
            rules = ",".join(str(r) for r in extra)
            LINES.append(f"NG {item.nodeid} {size} [{rules}] {allow_network}")


def pytest_terminal_summary(terminalreporter):
    for line in LINES:
        terminalreporter.write_line(line)
"""

TESTS = """
import pytest

pytestmark = [pytest.mark.medium, pytest.mark.netguard(allow=["db.internal:5432"])]


def test_module_level():
    pass


@pytest.mark.large
def test_function_over_module():
    pass


@pytest.mark.small
@pytest.mark.large
def test_two_sizes():
    pass


@pytest.mark.small
@pytest.mark.parametrize(
    "n", [1, pytest.param(2, marks=pytest.mark.large), pytest.param(3, marks=pytest.mark.small)]
)
def test_params(n):
    pass


@pytest.mark.xlarge
class TestBase:
    def test_in_base(self):
        pass


@pytest.mark.small
class TestDerived(TestBase):
    @pytest.mark.netguard(allow=["127.0.0.1:8080"])
    def test_in_derived(self):
        pass

    @pytest.mark.allow_network
    @pytest.mark.medium
    def test_method_over_class(self):
        pass


class TestUnmarkedDerived(TestBase):
    def test_inherits(self):
        pass


@pytest.mark.large
@pytest.mark.medium
class TestConflict:
    def test_in_conflict(self):
        pass

    @pytest.mark.small
    def test_overrides_the_conflict(self):
        pass


@pytest.mark.netguard(allow=["10.0.0.1/8"])
def test_bad_rule():
    pass
"""


def test_marker_data_on_real_items(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sizes=TESTS)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=15)
    db = "db.internal:5432"
    for line in [
        f"NG test_sizes.py::test_module_level medium [{db}] False",
        f"NG test_sizes.py::test_function_over_module large [{db}] False",
        "NG test_sizes.py::test_two_sizes ERROR test_sizes.py::test_two_sizes: conflicting "
        "size markers @pytest.mark.large and @pytest.mark.small on "
        "test_sizes.py::test_two_sizes: a test has one size*",
        f"NG test_sizes.py::test_params[1] small [{db}] False",
        f"NG test_sizes.py::test_params[2] large [{db}] False",
        f"NG test_sizes.py::test_params[3] small [{db}] False",
        f"NG test_sizes.py::TestBase::test_in_base xlarge [{db}] False",
        f"NG test_sizes.py::TestDerived::test_in_base small [{db}] False",
        f"NG test_sizes.py::TestDerived::test_in_derived small [127.0.0.1:8080,{db}] False",
        f"NG test_sizes.py::TestDerived::test_method_over_class medium [{db}] True",
        f"NG test_sizes.py::TestUnmarkedDerived::test_in_base xlarge [{db}] False",
        f"NG test_sizes.py::TestUnmarkedDerived::test_inherits xlarge [{db}] False",
        "NG test_sizes.py::TestConflict::test_in_conflict ERROR *conflicting size markers "
        "@pytest.mark.medium and @pytest.mark.large on test_sizes.py::TestConflict:*",
        f"NG test_sizes.py::TestConflict::test_overrides_the_conflict small [{db}] False",
        "NG test_sizes.py::test_bad_rule ERROR @pytest.mark.netguard(allow=...) on "
        "test_sizes.py::test_bad_rule: invalid rule '10.0.0.1/8': host bits set*",
    ]:
        result.stdout.fnmatch_lines([line])


def test_marker_data_levels(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from netguard.policy import marker_data

        def pytest_collection_modifyitems(items):
            for item in items:
                for level, name, args, kwargs in marker_data(item):
                    print("LEVEL", item.name, "|", level, "|", name, args, kwargs)
        """
    )
    pytester.makepyfile(
        test_levels="""
        import pytest

        pytestmark = pytest.mark.filterwarnings("ignore")

        class Base:
            pytestmark = [pytest.mark.large]

        @pytest.mark.skipif(False, reason="no")
        class TestIt(Base):
            @pytest.mark.parametrize("n", [pytest.param(1, marks=pytest.mark.xfail(strict=False))])
            def test_it(self, n):
                pass
        """
    )
    result = pytester.runpytest_inprocess("-s", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(xpassed=1)
    result.stdout.fnmatch_lines(
        [
            "LEVEL test_it[[]1] | test_levels.py::TestIt::test_it[[]1] (parameters) | xfail () "
            "{'strict': False}",
            "LEVEL test_it[[]1] | test_levels.py::TestIt::test_it[[]1] | parametrize *",
            "LEVEL test_it[[]1] | test_levels.py::TestIt | skipif (False,) {'reason': 'no'}",
            "LEVEL test_it[[]1] | test_levels.py::TestIt (from Base) | large () {}",
            "LEVEL test_it[[]1] | test_levels.py | filterwarnings ('ignore',) {}",
        ]
    )


# --------------------------------------------------------------------- the quick path

SIMPLE_CONFTEST = """
import pytest
from netguard.policy import MarkerCache, MarkerError, marker_data, resolve_markers, simple_size
from netguard.rules import RuleError

def pytest_configure(config):
    for name in ("small", "medium", "large", "xlarge", "allow_network", "netguard(allow)"):
        config.addinivalue_line("markers", name + ": netguard")

def pytest_collection_modifyitems(items):
    cache = MarkerCache()
    for item in items:
        quick = simple_size(item, "small")
        assert simple_size(item, "small", cache) == quick  # the per-parent cache agrees
        assert simple_size(item, "small", cache) == quick  # ... and its last-parent memo
        try:
            full = resolve_markers(marker_data(item), default="small", where=item.nodeid)
        except (MarkerError, RuleError):
            full = None
        simple = full is not None and not full.extra and not full.allow_network
        # the quick path never disagrees, and never declines a test whose every netguard
        # marker is one argument-free size marker
        if quick is not None:
            assert simple and quick == full.size, (item.nodeid, quick, full)
        sizes = [m for m in item.iter_markers() if m.name in ("netguard", "allow_network")
                 or m.name in ("small", "medium", "large", "xlarge")]
        one = len(sizes) <= 1 and all(not m.args and not m.kwargs for m in sizes) and all(
            m.name not in ("netguard", "allow_network") for m in sizes)
        if one:
            assert quick is not None, item.nodeid
        print("QUICK", item.nodeid, quick, "-" if full is None else full.size)
"""


def _random_module(rng: Any) -> str:
    """A test module with size, allow_network and netguard markers at random levels."""
    choices = [
        *["small", "medium", "large", "xlarge", "filterwarnings('ignore')"] * 3,
        "allow_network", "netguard(allow=['192.0.2.1:80'])", "medium('x')",
    ]  # fmt: skip

    def marks(k: int) -> list[str]:
        return [f"pytest.mark.{rng.choice(choices)}" for _ in range(rng.randrange(k + 1))]

    out = ["import pytest", f"pytestmark = [{', '.join(marks(2))}]"]
    for c in range(3):
        out.append(f"class Base{c}:\n    pytestmark = [{', '.join(marks(1))}]")
        deco = "".join(f"@{m}\n" for m in marks(2))
        out.append(f"{deco}class Test{c}(Base{c}):")
        for f in range(3):
            fdeco = "".join(f"    @{m}\n" for m in marks(2))
            params = ", ".join(
                f"pytest.param({i}, marks=[{', '.join(marks(1))}])" for i in range(2)
            )
            out.append(
                f"{fdeco}    @pytest.mark.parametrize('n', [{params}])\n"
                f"    def test_{f}(self, n):\n        pass"
            )
    return "\n\n".join(out) + "\n"


@pytest.mark.parametrize("seed", range(6))
def test_simple_size_agrees_with_the_full_resolution(pytester: pytest.Pytester, seed: int) -> None:
    import random

    rng = random.Random(seed)
    pytester.makeconftest(SIMPLE_CONFTEST)
    pytester.makepyfile(**{f"test_r{i}": _random_module(rng) for i in range(4)})
    result = pytester.runpytest_inprocess("-q", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4 * 3 * 3 * 2)
    quick = [line for line in result.outlines if line.startswith("QUICK")]
    assert len(quick) == 72
    assert any(not line.split()[2] == "None" for line in quick)  # the quick path is taken
