"""Unit tests of the C core's compiled policy (``netguard._netguard.Policy``).

What is tested here, against the C module imported directly (a broken build fails):

* matching semantics: the union of port sets of overlapping rules, interval merging,
  ``ALLOW_ALL``, ``DNS_LOCALHOST``, address normalisation, host and unix rules;
* argument checking of ``allows()``, ``count_allowed()`` and the constructor: wrong input
  is a ``TypeError`` or ``ValueError``, never a crash and never a ``SystemError``;
* the blob: ``from_bytes()`` rejects every malformed blob with ``ValueError`` (truncated
  at every length, bad magic, version, byte order, flags, offsets, counts, orderings,
  port-set indices, string references), and survives random mutation;
* leaks: ``tests/leakcheck.py`` in a subprocess (10^5 allowed and denied calls).

Differential tests against the reference are in test_differential.py; the hooks are in
test_hooks_c.py.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netguard
from netguard import _impl
from netguard import _netguard as ng
from netguard.rules import parse_rule

C = _impl.load("c")
TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(os.path.abspath(netguard.__file__)))


def policy(*texts: str, allow_all: bool = False, dns_localhost: bool = True) -> Any:
    rules = [parse_rule(t, source="test_core") for t in texts]
    return C.compile(rules, allow_all=allow_all, dns_localhost=dns_localhost)


def raw(
    ipv4: Any = (),
    ipv6: Any = (),
    portsets: Any = (None,),
    unix: Any = (),
    hosts: Any = (),
    flags: Any = 0,
) -> Any:
    """The C constructor with convenient defaults (tuples of ints become uint64 arrays)."""
    if isinstance(ipv4, tuple):
        ipv4 = array("Q", ipv4)
    if isinstance(ipv6, tuple):
        ipv6 = array("Q", ipv6)
    if isinstance(portsets, tuple):
        portsets = list(portsets)
    return ng.Policy(ipv4, ipv6, portsets, list(unix), list(hosts), flags)


# --------------------------------------------------------------------------- semantics


def test_ports_of_overlapping_rules_are_united() -> None:
    """DESIGN.md: 10.0.0.0/8:443 plus 10.1.0.0/16:80 allows 10.1.2.3 on both ports."""
    p = policy("10.0.0.0/8:443", "10.1.0.0/16:80")
    assert p.allows("10.1.2.3", 443)
    assert p.allows("10.1.2.3", 80)
    assert p.allows("10.2.0.1", 443)
    assert not p.allows("10.2.0.1", 80)
    assert not p.allows("10.1.2.3", 8080)
    assert not p.allows("11.0.0.1", 443)
    assert p.intervals == (3, 0)  # 10.0/16 (443), 10.1/16 (80,443), 10.2-10.255 (443)


def test_nested_rules_with_ranges_and_any() -> None:
    p = policy("10.0.0.0/8:8000-8100", "10.0.0.0/24", "10.0.0.128/25:22")
    assert p.allows("10.0.0.1", 1)  # any port wins inside /24
    assert p.allows("10.0.0.200", 65535)
    assert p.allows("10.0.1.1", 8000) and p.allows("10.0.1.1", 8100)
    assert not p.allows("10.0.1.1", 7999) and not p.allows("10.0.1.1", 8101)
    assert not p.allows("10.0.1.1", 22)


def test_ipv6_port_union() -> None:
    p = policy("[2001:db8::/32]:443", "[2001:db8:1::/48]:80")
    assert p.allows("2001:db8:1::5", 80) and p.allows("2001:db8:1::5", 443)
    assert p.allows("2001:db8:2::5", 443) and not p.allows("2001:db8:2::5", 80)
    assert p.intervals == (0, 3)


@pytest.mark.parametrize(
    ("texts", "intervals"),
    [
        (["10.0.0.0/25:80", "10.0.0.128/25:80"], (1, 0)),  # adjacent, same ports: merged
        (["10.0.0.0/24:80", "10.0.1.0/24:80", "10.0.2.0/23:80"], (1, 0)),
        (["10.0.0.0/25:80", "10.0.0.128/25:443"], (2, 0)),  # different ports: kept apart
        (["10.0.0.0/24:80", "10.0.2.0/24:80"], (2, 0)),  # a gap: kept apart
        (["10.0.0.0/24:80", "10.0.0.0/25:80"], (1, 0)),  # nested, same ports
        (["10.0.0.0/24:80", "10.0.0.64/26:80,443"], (3, 0)),
        (["10.0.0.0/24:80,443", "10.0.0.64/26:443"], (1, 0)),  # inner adds nothing
        (["[2001:db8::/33]", "[2001:db8:8000::/33]"], (0, 1)),
        (["0.0.0.0/1", "128.0.0.0/1"], (1, 0)),
        (["[::/1]:80", "[8000::/1]:80"], (0, 1)),
        (["1.2.3.4:80", "1.2.3.4:81"], (1, 0)),  # same address: one interval, {80-81}
    ],
)
def test_adjacent_and_nested_intervals_merge(texts: list[str], intervals: tuple[int, int]) -> None:
    assert policy(*texts).intervals == intervals


def test_ends_of_the_address_spaces() -> None:
    p = policy(
        "255.255.255.255:1",
        "0.0.0.0/32:2",
        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:3",
        "[::/128]:4",
    )
    assert p.allows("255.255.255.255", 1) and not p.allows("255.255.255.254", 1)
    assert p.allows("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 3)
    assert not p.allows("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 3)
    whole = policy("0.0.0.0/0:443", "[::/0]:443")
    assert whole.intervals == (1, 1)
    for host in ("0.0.0.1", "255.255.255.255", "::2", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert whole.allows(host, 443) and not whole.allows(host, 444)


def test_allow_all() -> None:
    p = policy(allow_all=True)
    assert p.flags == ng.ALLOW_ALL | ng.DNS_LOCALHOST
    assert p.allows("192.0.2.1", 1)
    assert p.allows("2001:db8::1", 65535)
    assert p.allows("anything.example")
    assert p.allows("anything.example", 443)
    assert p.allows("unix:/any/path")
    assert policy(allow_all=True, dns_localhost=False).flags == ng.ALLOW_ALL


def test_dns_localhost_flag() -> None:
    with_flag, without = policy(), policy(dns_localhost=False)
    assert with_flag.flags == ng.DNS_LOCALHOST and without.flags == 0
    for name in ("localhost", "LOCALHOST", "localhost.", "LocalHost."):
        assert with_flag.allows(name), name
        assert not without.allows(name), name
    # the flag is about looking the name up; a port asks for a host rule
    assert not with_flag.allows("localhost", 80)
    # *.localhost needs a rule (the medium size adds one)
    assert not with_flag.allows("a.localhost")
    assert policy("*.localhost").allows("a.localhost")


def test_a_host_rule_allows_lookup_and_ports() -> None:
    p = policy("example.com:443", "*.example.org")
    assert p.allows("example.com") and p.allows("EXAMPLE.COM.")
    assert p.allows("example.com", 443) and not p.allows("example.com", 80)
    assert p.allows("a.example.org", 1) and p.allows("a.b.example.org")
    assert not p.allows("example.org")  # the wildcard needs a label in front
    assert not p.allows("xexample.org")
    assert not p.allows("www.example.com")
    assert not p.allows("example.com.evil")


def test_empty_name_is_not_a_lookup() -> None:
    """docs/internals.md: a lookup is allowed when NAME is empty (not a lookup)."""
    assert policy(dns_localhost=False).allows("")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "0x7F000001",
        "2130706433",
        "0177.0.0.1",
        "[127.0.0.1]",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",  # docs/internals.md: the any-address is this host, 127.0.0.1
        "0",
        "::ffff:0.0.0.0",
    ],
)
def test_forms_of_loopback_ipv4(host: str) -> None:
    """Every kernel spelling of 127.0.0.1 (and of 'this host') is judged as 127.0.0.1."""
    p = policy("127.0.0.1:80")
    assert p.allows(host, 80)
    assert not p.allows(host, 81)


@pytest.mark.parametrize(
    "host",
    [
        "::1",
        "[::1]",
        "0:0:0:0:0:0:0:1",
        "fe80::1%lo",
        "[fe80::1%1]",
        "FE80::1",
        "::",  # docs/internals.md: '::' is this host, judged as ::1
        "[::]",
        "::%lo",
    ],
)
def test_forms_of_ipv6(host: str) -> None:
    p = policy("[::1]:80", "[fe80::1]:80")
    assert p.allows(host, 80)
    assert not p.allows(host, 81)


def test_any_address_is_the_loopback_of_its_family() -> None:
    v4_only, v6_only = policy("127.0.0.0/8"), policy("[::1]")
    assert v4_only.allows("0.0.0.0", 1) and not v4_only.allows("::", 1)
    assert v6_only.allows("::", 1) and not v6_only.allows("0.0.0.0", 1)
    assert v4_only.allows("::ffff:0.0.0.0", 1) and not v6_only.allows("::ffff:0.0.0.0", 1)


@pytest.mark.parametrize(
    "host", ["256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1.2.3.4 ", " 1.2.3.4", "1..2", "0x", "1.2.3."]
)
def test_not_an_address_is_a_name(host: str) -> None:
    """What inet_aton()/inet_pton() reject is a name: no port needed, no rule matches."""
    p = policy("0.0.0.0/0", "[::/0]")
    assert p.allows(host) is False
    assert p.allows(host, 80) is False


def test_unix_rules() -> None:
    p = policy("unix:/run/*.sock", "unix:@ng-*", "unix:/tmp/exact")
    assert p.allows("unix:/run/a.sock")
    assert p.allows("unix:/run/a/b.sock")  # '*' also matches '/'
    assert not p.allows("unix:/run/a.socket")
    assert p.allows("unix:@ng-1")
    assert not p.allows("unix:@other")
    assert p.allows("unix:/tmp/exact") and not p.allows("unix:/tmp/exact2")
    assert policy("unix:*").allows("unix:/anything/at/all")


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        # Python's fnmatch (the contract): '[!a]' negates, '[^a]' is the set {'^', 'a'}
        ("/tmp/[!a]x", "/tmp/bx", True),
        ("/tmp/[!a]x", "/tmp/ax", False),
        ("/tmp/[^a]x", "/tmp/ax", True),
        ("/tmp/[^a]x", "/tmp/^x", True),
        ("/tmp/[^a]x", "/tmp/bx", False),
        # no POSIX classes in Python's fnmatch: '[[:digit:]]' is '[[:digt]' then ']'
        ("/tmp/[[:digit:]]", "/tmp/1", False),
        # an unterminated '[' is a literal '['
        ("/tmp/[?-", "/tmp/[?-", True),
        ("/tmp/[a", "/tmp/[a", True),
    ],
)
def test_unix_globs_follow_python_fnmatch(glob: str, path: str, expected: bool) -> None:
    import fnmatch

    assert fnmatch.fnmatchcase(path, glob) is expected  # the contract's reading
    assert policy("unix:" + glob).allows("unix:" + path) is expected


# --------------------------------------------------------------------------- allows() args


def test_allows_argument_errors() -> None:
    p = policy("10.0.0.0/8")
    with pytest.raises(ValueError):
        p.allows("10.0.0.1")  # an IP needs a port
    with pytest.raises(ValueError):
        p.allows("10.0.0.1", None)
    with pytest.raises(ValueError):
        p.allows("::1")
    with pytest.raises(ValueError):
        p.allows("unix:/x", 80)  # a unix path takes none
    for host in (b"10.0.0.1", bytearray(b"10.0.0.1"), None, 1, ("10.0.0.1", 80)):
        with pytest.raises(TypeError):
            p.allows(host, 80)
    for port in ("80", 80.0, [80]):
        with pytest.raises(TypeError):
            p.allows("10.0.0.1", port)
    with pytest.raises(TypeError):
        p.allows()
    with pytest.raises(TypeError):
        p.allows("10.0.0.1", 80, 1)
    assert p.allows("10.0.0.1", True) is True  # an int subclass is an int


@pytest.mark.parametrize("port", [-1, 65536, 2**31, 2**63, 2**64, -(2**64)])
def test_allows_port_out_of_range(port: int) -> None:
    """Any int outside 0..65535 is a ValueError (not an OverflowError for big ones)."""
    p = policy("10.0.0.0/8")
    with pytest.raises(ValueError):
        p.allows("10.0.0.1", port)
    with pytest.raises(ValueError):
        p.allows("example.com", port)


def test_allows_answers_bools() -> None:
    p = policy("10.0.0.0/8", "example.com", "unix:/x")
    for args in (("10.0.0.1", 1), ("11.0.0.1", 1), ("example.com",), ("x.y",), ("unix:/x",)):
        assert type(p.allows(*args)) is bool


# --------------------------------------------------------------------------- count_allowed


def v4(*texts: str) -> array[int]:
    return array("I", [int.from_bytes(bytes(map(int, t.split("."))), "big") for t in texts])


def v6(*values: int) -> array[int]:
    out = array("Q")
    for v in values:
        out.extend((v >> 64, v & (2**64 - 1)))
    return out


def test_count_allowed() -> None:
    p = policy("10.0.0.0/8:443", "10.1.0.0/16:80", "[2001:db8::/32]:443")
    assert p.count_allowed(4, v4("10.0.0.1", "10.1.0.1", "11.0.0.1"), 443) == 2
    assert p.count_allowed(4, v4("10.0.0.1", "10.1.0.1", "11.0.0.1"), 80) == 1
    assert p.count_allowed(4, array("I"), 80) == 0
    db8 = 0x20010DB8 << 96
    assert p.count_allowed(6, v6(db8, db8 + 1, 1), 443) == 2


def test_count_allowed_argument_errors() -> None:
    p = policy("10.0.0.0/8")
    for family, port in ((5, 80), (0, 80), (4, -1), (4, 65536), (6, 70000)):
        with pytest.raises(ValueError):
            p.count_allowed(family, array("I"), port)
    with pytest.raises(TypeError):
        p.count_allowed(4, [1, 2, 3], 80)
    with pytest.raises(TypeError):
        p.count_allowed(4, "abc", 80)


def test_count_allowed_normalises_like_allows_this_host() -> None:
    """0.0.0.0 is this host in allows(); count_allowed() must judge it the same way."""
    p = policy("127.0.0.0/8")
    assert p.allows("0.0.0.0", 80)
    assert p.count_allowed(4, array("I", [0]), 80) == 1


def test_count_allowed_normalises_like_allows_v4_mapped() -> None:
    """A v4-mapped address is judged as IPv4 in allows(); count_allowed() must agree."""
    p = policy("[::/0]")  # covers every IPv6 address, but no IPv4 one
    mapped = (0xFFFF << 32) | 0x01020304
    assert not p.allows("::ffff:1.2.3.4", 80)
    assert p.count_allowed(6, v6(mapped), 80) == 0
    q = policy("1.2.3.4")
    assert q.allows("::ffff:1.2.3.4", 80)
    assert q.count_allowed(6, v6(mapped), 80) == 1


def test_count_allowed_normalises_like_allows_unspecified_v6() -> None:
    p = policy("127.0.0.1", "[::1]")
    assert p.count_allowed(6, v6(0), 80) == int(p.allows("::", 80))


def test_count_allowed_allow_all() -> None:
    p = policy(allow_all=True)
    assert p.allows("1.2.3.4", 80)
    assert p.count_allowed(4, v4("1.2.3.4", "5.6.7.8"), 80) == 2
    assert p.count_allowed(6, v6(1, 2, 3), 80) == 3


# --------------------------------------------------------------------------- constructor


def test_constructor_accepts_valid_input() -> None:
    p = raw(
        ipv4=(0x0A000000, 0x0AFFFFFF, 1),
        ipv6=(0x20010DB8 << 32, 0, (0x20010DB8 << 32) | 0xFFFFFFFF, 2**64 - 1, 0),
        portsets=(None, ((80, 80), (443, 443))),
        unix=["/run/*.sock"],
        hosts=[("example.com", 1)],
        flags=ng.DNS_LOCALHOST,
    )
    assert p.allows("10.1.1.1", 443) and not p.allows("10.1.1.1", 22)
    assert p.allows("2001:db8::1", 22)
    assert p.allows("example.com", 80) and p.allows("unix:/run/x.sock")
    assert p.flags == ng.DNS_LOCALHOST and p.intervals == (1, 1) and p.learned == 0
    assert ng.Policy(ipv4=array("Q"), ipv6=b"", portsets=[], unix=[], hosts=[], flags=0)


def test_zero_to_65535_is_any_port() -> None:
    a = raw(ipv4=(1, 1, 0), portsets=(((0, 65535),),))
    b = raw(ipv4=(1, 1, 0), portsets=(None,))
    assert a.to_bytes() == b.to_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"ipv4": array("Q", [1, 2])}, id="ipv4-not-a-multiple-of-3"),
        pytest.param({"ipv4": b"\0" * 25}, id="ipv4-ragged-bytes"),
        pytest.param({"ipv6": array("Q", [1, 2, 3, 4])}, id="ipv6-not-a-multiple-of-5"),
        pytest.param({"ipv4": (5, 4, 0)}, id="ipv4-first-after-last"),
        pytest.param({"ipv4": (0, 2**32, 0)}, id="ipv4-beyond-32-bits"),
        pytest.param({"ipv4": (2**64 - 1, 2**64 - 1, 0)}, id="ipv4-far-beyond"),
        pytest.param({"ipv6": (0, 5, 0, 4, 0)}, id="ipv6-first-after-last-lo"),
        pytest.param({"ipv6": (1, 0, 0, 2**64 - 1, 0)}, id="ipv6-first-after-last-hi"),
        pytest.param({"ipv4": (0, 1, 1)}, id="ipv4-unknown-portset"),
        pytest.param({"ipv4": (0, 1, 2**64 - 1)}, id="ipv4-huge-portset"),
        pytest.param({"ipv6": (0, 0, 0, 1, 1)}, id="ipv6-unknown-portset"),
        pytest.param({"ipv4": (0, 1, 0), "portsets": ()}, id="no-portsets"),
        pytest.param({"hosts": [("a.example", 1)]}, id="host-unknown-portset"),
        pytest.param({"hosts": [("a.example", -1)]}, id="host-negative-portset"),
        pytest.param({"portsets": (((80, 79),),)}, id="range-reversed"),
        pytest.param({"portsets": (((80, 90), (85, 100)),)}, id="ranges-overlap"),
        pytest.param({"portsets": (((90, 100), (10, 20)),)}, id="ranges-unsorted"),
        pytest.param({"portsets": (((0, 65536),),)}, id="port-too-big"),
        pytest.param({"portsets": (((-1, 5),),)}, id="port-negative"),
        pytest.param({"unix": ["/x\0y"]}, id="unix-embedded-nul"),
        pytest.param({"hosts": [("a\0b", 0)]}, id="host-embedded-nul"),
        pytest.param({"flags": 4}, id="flags-unknown-bit"),
        pytest.param({"flags": -1}, id="flags-negative"),
        pytest.param({"flags": (1 << 64) | ng.ALLOW_ALL}, id="flags-beyond-64-bits"),
        pytest.param({"flags": -(2**64) + ng.DNS_LOCALHOST}, id="flags-wrapping-negative"),
    ],
)
def test_constructor_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        raw(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"ipv4": [0, 1, 0]}, id="ipv4-list"),
        pytest.param({"ipv4": None}, id="ipv4-none"),
        pytest.param({"ipv6": "abc"}, id="ipv6-str"),
        pytest.param({"portsets": 5}, id="portsets-int"),
        pytest.param({"portsets": [5]}, id="portset-int"),
        pytest.param({"portsets": [[[1, 2]]]}, id="range-a-list"),
        pytest.param({"portsets": ["ab"]}, id="portset-a-str"),
        pytest.param({"portsets": [((1, 2, 3),)]}, id="range-of-three"),
        pytest.param({"portsets": [(("1", "2"),)]}, id="range-of-str"),
        pytest.param({"unix": [b"/x"]}, id="unix-bytes"),
        pytest.param({"unix": [5]}, id="unix-int"),
        pytest.param({"hosts": [("a",)]}, id="host-one-item"),
        pytest.param({"hosts": [["a", 0]]}, id="host-a-list"),
        pytest.param({"hosts": [(b"a", 0)]}, id="host-bytes"),
        pytest.param({"hosts": ["a"]}, id="host-a-str"),
        pytest.param({"flags": 1.0}, id="flags-float"),
        pytest.param({"flags": "1"}, id="flags-str"),
        pytest.param({"flags": None}, id="flags-none"),
    ],
)
def test_constructor_rejects_bad_types(kwargs: dict[str, Any]) -> None:
    """Wrong types are TypeError (ValueError where a sequence has the wrong length) —
    never SystemError, which means a C API call was misused."""
    with pytest.raises((TypeError, ValueError)) as info:
        raw(**kwargs)
    assert not isinstance(info.value, SystemError)


def test_constructor_argument_count() -> None:
    with pytest.raises(TypeError):
        ng.Policy()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ng.Policy(b"", b"", [], [], [])  # type: ignore[call-arg]


@settings(max_examples=300, deadline=None)
@given(
    v4_words=st.lists(
        st.one_of(st.integers(0, 3), st.integers(0, 2**32), st.integers(0, 2**64 - 1)),
        max_size=12,
    ),
    v6_words=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)), max_size=15),
    portsets=st.lists(
        st.one_of(
            st.none(),
            st.lists(st.tuples(st.integers(-2, 65537), st.integers(-2, 65537)), max_size=3).map(
                tuple
            ),
        ),
        max_size=3,
    ),
    hosts=st.lists(st.tuples(st.text(max_size=5), st.integers(-1, 3)), max_size=3),
    unix=st.lists(st.text(max_size=5), max_size=3),
    flags=st.integers(-1, 4),
)
def test_constructor_fuzz(
    v4_words: list[int],
    v6_words: list[int],
    portsets: list[Any],
    hosts: list[tuple[str, int]],
    unix: list[str],
    flags: int,
) -> None:
    """Random constructor input: a ValueError/TypeError or a policy that answers."""
    try:
        p = raw(array("Q", v4_words), array("Q", v6_words), portsets, unix, hosts, flags)
    except (ValueError, TypeError) as exc:
        assert not isinstance(exc, SystemError)
        return
    for host, port in (("0.0.0.1", 1), ("1.2.3.4", 80), ("::1", 443), ("::", 0)):
        assert isinstance(p.allows(host, port), bool)
    for name in hosts:
        try:
            p.allows(name[0])
        except (ValueError, UnicodeError):  # a name that IDNA cannot encode
            pass
    assert ng.Policy.from_bytes(p.to_bytes()).to_bytes() == p.to_bytes()


# --------------------------------------------------------------------------- the blob

# The header of the blob (src/ng_policy.h, ng_header): magic, then 22 uint32 fields in the
# byte order of the machine that wrote it. IPv6 intervals are 40-byte records
# {start hi, lo; end hi, lo; ports, reserved}.
HEADER = struct.Struct("=8s22I")
V6_RECORD = 40
FIELDS = (
    "version",
    "byte_order",
    "flags",
    "size",
    "n_v4",
    "off_v4",
    "n_v6",
    "off_v6",
    "n_words",
    "off_words",
    "n_unix",
    "off_unix",
    "n_hosts",
    "off_hosts",
    "n_strings",
    "off_strings",
    "v4_bits",
    "v4_shift",
    "off_v4_index",
    "v6_bits",
    "v6_shift",
    "off_v6_index",
)


def header(blob: bytes) -> dict[str, int]:
    values = HEADER.unpack_from(blob)
    return dict(zip(FIELDS, values[1:], strict=True))


def with_field(blob: bytes, **changes: int) -> bytes:
    values = list(HEADER.unpack_from(blob))
    for name, value in changes.items():
        values[1 + FIELDS.index(name)] = value & 0xFFFFFFFF
    out = bytearray(blob)
    HEADER.pack_into(out, 0, *values)
    return bytes(out)


def with_u32(blob: bytes, offset: int, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into("=I", out, offset, value & 0xFFFFFFFF)
    return bytes(out)


def with_u64(blob: bytes, offset: int, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into("=Q", out, offset, value)
    return bytes(out)


def u32(blob: bytes, offset: int) -> int:
    return int(struct.unpack_from("=I", blob, offset)[0])


@pytest.fixture(scope="module")
def blob() -> bytes:
    """A small blob with something in every section: 3 IPv4 and 3 IPv6 intervals,
    port sets with ranges, a unix rule, two host rules."""
    p = policy(
        "10.0.0.0/8:443",
        "10.1.0.0/16:80",
        "[2001:db8::/32]:80-81,8000",
        "[2001:db8:1::/48]:443",
        "example.com:443",
        "*.example.org",
        "unix:/run/*.sock",
    )
    data: bytes = p.to_bytes()
    h = header(data)
    assert (h["n_v4"], h["n_v6"], h["n_unix"], h["n_hosts"]) == (3, 3, 1, 2)
    assert h["version"] == ng.BLOB_VERSION and h["size"] == len(data) == p.nbytes
    return data


def test_blob_round_trip(blob: bytes) -> None:
    p = ng.Policy.from_bytes(blob)
    assert p.to_bytes() == blob
    assert isinstance(p.to_bytes(), bytes)
    assert p.allows("10.1.2.3", 80) and p.allows("10.1.2.3", 443)
    assert p.allows("2001:db8:1::1", 8000) and p.allows("unix:/run/a.sock")
    assert ng.Policy.from_bytes(bytearray(blob)).to_bytes() == blob
    assert ng.Policy.from_bytes(memoryview(blob)).to_bytes() == blob
    # an unaligned buffer: from_bytes copies it to aligned memory
    unaligned = memoryview(b"x" + blob)[1:]
    assert ng.Policy.from_bytes(unaligned).to_bytes() == blob


def test_from_bytes_types() -> None:
    for bad in ("NGPOLICY", None, 5, [1, 2]):
        with pytest.raises(TypeError):
            ng.Policy.from_bytes(bad)  # type: ignore[arg-type]


def test_truncated_at_every_length(blob: bytes) -> None:
    for n in range(len(blob)):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(blob[:n])


def test_trailing_bytes(blob: bytes) -> None:
    for extra in (b"\0", b"\0" * 8):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(blob + extra)


def test_bad_magic(blob: bytes) -> None:
    for i in range(8):
        bad = bytearray(blob)
        bad[i] ^= 0x20
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bytes(bad))


@pytest.mark.parametrize("version", [0, 2, 0x01000000, 0xFFFFFFFF])
def test_bad_version(blob: bytes, version: int) -> None:
    with pytest.raises(ValueError, match="version"):
        ng.Policy.from_bytes(with_field(blob, version=version))


def test_bad_byte_order(blob: bytes) -> None:
    with pytest.raises(ValueError):
        ng.Policy.from_bytes(with_field(blob, byte_order=0x04030201))


@pytest.mark.parametrize("flags", [4, 8, 0x80000000, 0xFFFFFFFF])
def test_unknown_flags_in_blob(blob: bytes, flags: int) -> None:
    with pytest.raises(ValueError):
        ng.Policy.from_bytes(with_field(blob, flags=flags))


@pytest.mark.parametrize("delta", [-8, -1, 1, 8, 2**31])
def test_size_field_mismatch(blob: bytes, delta: int) -> None:
    with pytest.raises(ValueError):
        ng.Policy.from_bytes(with_field(blob, size=len(blob) + delta))


SECTIONS = ("v4", "v6", "words", "unix", "hosts", "strings")


@pytest.mark.parametrize("section", SECTIONS)
def test_bad_offsets(blob: bytes, section: str) -> None:
    off = header(blob)[f"off_{section}"]
    for value in (0, 8, off + 1, off + 4, len(blob) + 8, 0x7FFFFFF8, 0xFFFFFFF8):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(with_field(blob, **{f"off_{section}": value}))


@pytest.mark.parametrize("section", SECTIONS)
def test_bad_counts(blob: bytes, section: str) -> None:
    for value in (len(blob), 0x10000000, 0x7FFFFFFF, 0xFFFFFFFF):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(with_field(blob, **{f"n_{section}": value}))


def test_v4_intervals_unsorted_overlapping_or_reversed(blob: bytes) -> None:
    h = header(blob)
    n, off = h["n_v4"], h["off_v4"]
    start, end = off, off + 4 * n
    s0, s1, e0 = u32(blob, start), u32(blob, start + 4), u32(blob, end)
    # swap the first two intervals
    swapped = with_u32(with_u32(blob, start, s1), start + 4, s0)
    swapped = with_u32(with_u32(swapped, end, u32(blob, end + 4)), end + 4, e0)
    for bad in (
        swapped,
        with_u32(blob, end, s1),  # end[0] reaches into interval 1: overlap
        with_u32(blob, start, e0 + 1),  # start[0] > end[0]
        with_u32(blob, start + 4, s0),  # two intervals with one start
    ):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bad)


def test_v6_intervals_unsorted_overlapping_or_reversed(blob: bytes) -> None:
    h = header(blob)
    off = h["off_v6"]
    start, end = off, off + 16  # record 0: start at +0, end at +16; record 1 at +40
    s1_hi = struct.unpack_from("=Q", blob, start + V6_RECORD)[0]
    s1_lo = struct.unpack_from("=Q", blob, start + V6_RECORD + 8)[0]
    e0_hi = struct.unpack_from("=Q", blob, end)[0]
    for bad in (
        with_u64(with_u64(blob, end, s1_hi), end + 8, s1_lo),  # end[0] == start[1]
        with_u64(blob, start, e0_hi + 1),  # start[0] > end[0] (high word)
        with_u64(
            with_u64(blob, start + V6_RECORD, 0), start + V6_RECORD + 8, 0
        ),  # start[1] < start[0]
    ):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bad)


def test_bad_port_set_index(blob: bytes) -> None:
    h = header(blob)
    v4_ports = h["off_v4"] + 8 * h["n_v4"]
    v6_ports = h["off_v6"] + 32  # the ports of record 0
    host_ports = h["off_hosts"] + 8  # {offset, length, ports, reserved}
    for where in (v4_ports, v6_ports, host_ports, host_ports + 16):
        for value in (h["n_words"], h["n_words"] + 1, 0x80000000, 0xFFFFFFFF):
            with pytest.raises(ValueError):
                ng.Policy.from_bytes(with_u32(blob, where, value))


def test_bad_port_set_contents(blob: bytes) -> None:
    h = header(blob)
    v4_ports = h["off_v4"] + 8 * h["n_v4"]
    words = h["off_words"]
    p = u32(blob, v4_ports)  # the port set of 10.0.0.0/16: {443}
    head = words + 4 * p
    assert u32(blob, head) == 1 and u32(blob, head + 4) == (443 << 16 | 443)
    for bad in (
        with_u32(blob, head, h["n_words"]),  # more ranges than there are words
        with_u32(blob, head, 0xFFFFFFFF),
        with_u32(blob, head, 0x80000001),  # "any" with ranges
        with_u32(blob, head + 4, 444 << 16 | 443),  # lo > hi
    ):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bad)
    # a set of two ranges out of order
    p2 = u32(blob, h["off_v6"] + 32)  # 2001:db8::/48: {80-81, 8000}
    head2 = words + 4 * p2
    assert u32(blob, head2) == 2
    first, second = u32(blob, head2 + 4), u32(blob, head2 + 8)
    with pytest.raises(ValueError):
        ng.Policy.from_bytes(with_u32(with_u32(blob, head2 + 4, second), head2 + 8, first))


def test_bad_string_references(blob: bytes) -> None:
    h = header(blob)
    n_strings = h["n_strings"]
    unix_ref, host_ref = h["off_unix"], h["off_hosts"]
    offset, length = u32(blob, unix_ref), u32(blob, unix_ref + 4)
    nul_at = h["off_strings"] + offset + length
    assert blob[nul_at] == 0
    for bad in (
        with_u32(blob, unix_ref, n_strings),  # offset at the end
        with_u32(blob, unix_ref, 0xFFFFFFFF),
        with_u32(blob, unix_ref + 4, n_strings),  # longer than the table
        with_u32(blob, unix_ref + 4, 0xFFFFFFFF),
        with_u32(blob, unix_ref + 4, length - 1),  # the NUL is not where it says
        with_u32(blob, host_ref, n_strings),
        with_u32(blob, host_ref + 4, 0xFFFFFFFF),
        with_u32(blob, host_ref + 4, u32(blob, host_ref + 4) + 1),
        blob[:nul_at] + b"x" + blob[nul_at + 1 :],  # unterminated
    ):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bad)


FUZZ_QUERIES: list[tuple[str, int | None]] = [
    ("10.1.2.3", 80),
    ("10.0.0.1", 443),
    ("0.0.0.0", 0),
    ("255.255.255.255", 65535),
    ("2001:db8:1::1", 443),
    ("::", 1),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 8000),
    ("::ffff:10.1.2.3", 80),
    ("example.com", None),
    ("example.com", 443),
    ("a.example.org", 1),
    ("localhost", None),
    ("unix:/run/a.sock", None),
    ("unix:@x", None),
]


def exercise(p: Any) -> None:
    """Everything a policy can be asked; must not crash whatever the blob held."""
    for host, port in FUZZ_QUERIES:
        assert isinstance(p.allows(host, port), bool)
    for port in (0, 80, 443, 65535):
        p.count_allowed(4, array("I", [0, 0x0A010203, 0xFFFFFFFF]), port)
        p.count_allowed(6, v6(0, 1, 0x20010DB8 << 96, 2**128 - 1), port)
    assert ng.Policy.from_bytes(p.to_bytes()).to_bytes() == p.to_bytes()
    p.flags, p.intervals, p.nbytes, p.learned  # noqa: B018


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_blobs_never_crash(blob: bytes, data: st.DataObject) -> None:
    """Flip random bytes: from_bytes() raises ValueError or gives a usable policy."""
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), min_size=1, max_size=6
        )
    )
    bad = bytearray(blob)
    for index, xor in flips:
        bad[index] ^= xor
    try:
        p = ng.Policy.from_bytes(bytes(bad))
    except ValueError:
        return
    exercise(p)


INTERESTING_U32 = [0, 1, 4, 7, 8, 72, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF8, 0xFFFFFFFF]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_headers_and_words_never_crash(blob: bytes, data: st.DataObject) -> None:
    """Set header fields and aligned words to boundary values (sizes, offsets, counts,
    indices are where a reader goes wrong)."""
    bad = blob
    size = len(blob)
    values = st.one_of(
        st.sampled_from([*INTERESTING_U32, size, size - 4, size - 8, size + 8]),
        st.integers(0, size + 16),
        st.integers(0, 2**32 - 1),
    )
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()):
            field = data.draw(st.sampled_from(FIELDS[4:]))  # counts and offsets
            bad = with_field(bad, **{field: data.draw(values)})
        else:
            where = data.draw(st.integers(HEADER.size // 4, size // 4 - 1)) * 4
            bad = with_u32(bad, where, data.draw(values))
    try:
        p = ng.Policy.from_bytes(bad)
    except ValueError:
        return
    exercise(p)


# --------------------------------------------------------------------------- leaks


def test_no_leaks_over_many_calls() -> None:
    """tests/leakcheck.py: 10^5 allowed and 10^5 denied calls of every kind, in a
    subprocess; memory (tracemalloc, maxrss) and object counts must stay flat."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "leakcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "leakcheck: ok" in result.stdout, result.stdout


def test_bad_lookup_index() -> None:
    # 200 disjoint /24s: enough intervals for an index; corrupt it in every way that
    # could send a lookup out of bounds or to the wrong interval.
    p = policy(*(f"10.{i}.0.0/24" for i in range(200)))
    blob = p.to_bytes()
    h = header(blob)
    assert h["v4_bits"] > 0
    index = h["off_v4_index"]
    last = index + 4 * (1 << h["v4_bits"])
    for bad in (
        with_u32(blob, index, 1),  # index[0] must be 0
        with_u32(blob, last, h["n_v4"] + 1),  # the last entry must be n
        with_u32(blob, index + 4 * 5, 0xFFFFFFFF),  # not monotonic / out of range
        with_field(blob, v4_shift=h["v4_shift"] + 1),  # not the common prefix
        with_field(blob, v4_bits=h["v4_bits"] + 1),  # a section of the wrong size
        with_field(blob, v4_bits=21),  # over the limit
    ):
        with pytest.raises(ValueError):
            ng.Policy.from_bytes(bad)
    assert ng.Policy.from_bytes(blob).allows("10.150.0.7", 80)
