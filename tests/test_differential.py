"""Differential property tests: the C core against the pure-Python reference.

The reference (``netguard._reference``) is a linear scan with :mod:`ipaddress`, written to
be obviously right; the C core (``netguard._netguard``) is an interval sweep with binary
search. Hypothesis draws rule sets that stress the sweep (prefixes from /0 to /32 and
/128, nested and overlapping rules with different port sets, blocks touching the ends of
the address space) and queries that stress address normalisation (every boundary of
every rule, v4-mapped IPv6, ``0.0.0.0``/``::``, the inet_aton forms ``127.1``,
``0x7f.1``, ``2130706433``), and asserts that both implementations answer every query
the same way. No network is touched: ``allows()`` is static.

The C module is imported directly, so a broken build fails here instead of skipping.
"""

from __future__ import annotations

import ipaddress
import random
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from netguard import _impl
from netguard import _netguard as _c_module  # noqa: F401  (a broken build fails here)
from netguard.rules import Rule, parse_rule

C = _impl.load("c")
REF = _impl.load("python")

V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1
U64 = 2**64 - 1
MAPPED = 0xFFFF << 32  # ::ffff:0:0, the v4-mapped block

# Generous enough to find real bugs, small enough that the whole file runs in well under
# 30 seconds (the reference is a linear scan through ipaddress objects).
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- helpers


def rules_of(texts: Iterable[str]) -> list[Rule]:
    return [parse_rule(t, source="test_differential") for t in texts]


def compile_both(
    rules: Sequence[Rule], *, allow_all: bool = False, dns_localhost: bool = True
) -> tuple[Any, Any]:
    return (
        C.compile(rules, allow_all=allow_all, dns_localhost=dns_localhost),
        REF.compile(rules, allow_all=allow_all, dns_localhost=dns_localhost),
    )


def outcome(policy: Any, host: str, port: int | None) -> object:
    """allows() as a comparable value: the answer, or the type of the exception."""
    try:
        return bool(policy.allows(host, port))
    except Exception as exc:  # compared by type: both must raise the same
        return type(exc)


def assert_agree(
    c_policy: Any, ref_policy: Any, queries: Iterable[tuple[str, int | None]]
) -> None:
    for host, port in queries:
        got, want = outcome(c_policy, host, port), outcome(ref_policy, host, port)
        assert got == want, f"allows({host!r}, {port!r}): C says {got}, reference says {want}"


def v4_text(addr: int) -> str:
    return str(ipaddress.IPv4Address(addr))


def v6_text(addr: int) -> str:
    return str(ipaddress.IPv6Address(addr))


def kernel_forms(addr: int) -> list[str]:
    """Texts the C library reads as the IPv4 address ``addr`` (inet_aton and friends)."""
    a, b, c, d = addr.to_bytes(4, "big")
    return [
        f"{a}.{b}.{c}.{d}",
        f"{a}.{b}.{(c << 8) | d}",  # 127.0.1
        f"{a}.{(b << 16) | (c << 8) | d}",  # 127.1
        str(addr),  # 2130706433
        hex(addr),  # 0x7f000001
        f"{hex(a)}.{b}.{c}.{d}",  # 0x7f.0.0.1
        f"{hex(a)}.{(b << 16) | (c << 8) | d}",  # 0x7f.1
        ".".join(f"0{oct(x)[2:]}" if x else "0" for x in (a, b, c, d)),  # 0177.0.0.01
        f"[{a}.{b}.{c}.{d}]",
        f"::ffff:{a}.{b}.{c}.{d}",  # v4-mapped: judged as the IPv4 address
        f"::ffff:{(a << 8) | b:x}:{(c << 8) | d:x}",
        f"[::ffff:{a}.{b}.{c}.{d}]",
        f"0:0:0:0:0:ffff:{a}.{b}.{c}.{d}",
    ]


def v6_forms(addr: int) -> list[str]:
    ip = ipaddress.IPv6Address(addr)
    return [str(ip), ip.exploded, f"[{ip}]", f"{ip}%lo", f"[{ip}%1]", str(ip).upper()]


def neighbours(first: int, last: int, top: int) -> list[int]:
    """The boundaries of a block: first, last, and the addresses just outside."""
    out = [first, last]
    if first > 0:
        out.append(first - 1)
    if last < top:
        out.append(last + 1)
    return out


def port_probes(rules: Sequence[Rule]) -> list[int]:
    """Ports on and next to every edge of every rule's port set, plus the extremes."""
    ports = {0, 1, 80, 443, 65534, 65535}
    for r in rules:
        for lo, hi in r.ports or ():
            ports.update(p for p in (lo - 1, lo, hi, hi + 1) if 0 <= p <= 65535)
    return sorted(ports)


# --------------------------------------------------------------------------- strategies

INTERESTING_PORTS = [0, 1, 22, 53, 79, 80, 81, 443, 444, 1023, 1024, 8000, 8080, 65534, 65535]
port_values = st.one_of(st.sampled_from(INTERESTING_PORTS), st.integers(0, 65535))


@st.composite
def port_lists(draw: st.DrawFn) -> str:
    """The ``:PORTS`` part of a rule (``""`` for any port): singles, ranges, a mix."""
    kind = draw(st.sampled_from(["any", "any", "single", "ranges", "mix"]))
    if kind == "any":
        return ""
    n = 1 if kind == "single" else draw(st.integers(1, 4))
    items = []
    for _ in range(n):
        lo = draw(port_values)
        if kind == "single" or (kind == "mix" and draw(st.booleans())):
            items.append(str(lo))
        else:
            hi = draw(st.one_of(st.integers(lo, min(65535, lo + 3)), st.integers(lo, 65535)))
            items.append(f"{lo}-{hi}")
    return ",".join(items)


V4_SEEDS = [0, V4_MAX, 0x7F000001, 0x0A000000, 0xC0000200, 0x80000000, 0x7FFFFFFF]
V6_SEEDS = [0, 1, V6_MAX, 0x20010DB8 << 96, 0xFE80 << 112, MAPPED, MAPPED | 0x7F000001, 1 << 127]


@st.composite
def v4_blocks(draw: st.DrawFn) -> tuple[int, int]:
    """(network, prefix length) of an IPv4 block."""
    addr = draw(st.one_of(st.sampled_from(V4_SEEDS), st.integers(0, V4_MAX)))
    plen = draw(st.one_of(st.sampled_from([0, 1, 8, 16, 24, 31, 32]), st.integers(0, 32)))
    mask = (V4_MAX << (32 - plen)) & V4_MAX
    return addr & mask, plen


@st.composite
def v6_blocks(draw: st.DrawFn) -> tuple[int, int]:
    addr = draw(st.one_of(st.sampled_from(V6_SEEDS), st.integers(0, V6_MAX)))
    plen = draw(
        st.one_of(st.sampled_from([0, 1, 32, 64, 96, 104, 112, 127, 128]), st.integers(0, 128))
    )
    mask = (V6_MAX << (128 - plen)) & V6_MAX
    return addr & mask, plen


def nested(draw: st.DrawFn, block: tuple[int, int], bits: int) -> tuple[int, int]:
    """A block inside ``block`` (possibly equal to it): nesting and overlap on purpose."""
    network, plen = block
    plen2 = draw(st.integers(plen, bits))
    inside = draw(st.integers(0, (1 << (bits - plen)) - 1)) if plen < bits else 0
    top = (1 << bits) - 1
    mask = (top << (bits - plen2)) & top
    return (network | inside) & mask, plen2


def rule_text(family: int, network: int, plen: int, ports: str) -> str:
    if family == 4:
        body = f"{v4_text(network)}/{plen}"
        return f"{body}:{ports}" if ports else body
    body = f"{v6_text(network)}/{plen}"
    return f"[{body}]:{ports}" if ports else body


@st.composite
def ip_rule_sets(draw: st.DrawFn) -> list[Rule]:
    """1-12 IPv4/IPv6 rules, a third of them nested in an earlier one."""
    texts: list[str] = []
    blocks: list[tuple[int, tuple[int, int]]] = []
    for _ in range(draw(st.integers(1, 12))):
        if blocks and draw(st.integers(0, 2)) == 0:
            family, parent = draw(st.sampled_from(blocks))
            block = nested(draw, parent, 32 if family == 4 else 128)
        else:
            family = draw(st.sampled_from([4, 6]))
            block = draw(v4_blocks() if family == 4 else v6_blocks())
        blocks.append((family, block))
        texts.append(rule_text(family, *block, draw(port_lists())))
    note(f"rules: {texts}")
    return rules_of(texts)


@st.composite
def ip_queries(draw: st.DrawFn, rules: Sequence[Rule]) -> list[tuple[str, int]]:
    """Every boundary of every rule in several spellings, random and special addresses."""
    v4: set[int] = {0, 1, 0x7F000001, V4_MAX}
    v6: set[int] = {0, 1, V6_MAX, MAPPED, MAPPED | 0x7F000001, MAPPED - 1, MAPPED | V4_MAX}
    for r in rules:
        if r.family == 4:
            v4.update(neighbours(r.first, r.last, V4_MAX))
        else:
            v6.update(neighbours(r.first, r.last, V6_MAX))
            if r.first >> 32 == 0xFFFF:  # inside the mapped block: its IPv4 twin too
                v4.add(r.first & V4_MAX)
    v4.update(draw(st.lists(st.integers(0, V4_MAX), max_size=4)))
    v6.update(draw(st.lists(st.integers(0, V6_MAX), max_size=4)))
    ports = port_probes(rules)
    queries: list[tuple[str, int]] = []
    rnd = random.Random(draw(st.integers(0, 2**32)))
    for a in sorted(v4):
        forms = kernel_forms(a)
        for text in [forms[0], *rnd.sample(forms[1:], 3)]:
            queries.append((text, rnd.choice(ports)))
    for a in sorted(v6):
        forms = v6_forms(a)
        for text in [forms[0], rnd.choice(forms[1:])]:
            queries.append((text, rnd.choice(ports)))
    # every port probe against a few addresses inside the rules
    for r in rules[:4]:
        text = v4_text(r.last) if r.family == 4 else v6_text(r.last)
        queries.extend((text, p) for p in ports)
    queries += [(t, rnd.choice(ports)) for t in ("0.0.0.0", "0", "::", "[::]", "::ffff:0.0.0.0")]
    return queries


# --------------------------------------------------------------------------- IP rules


@SETTINGS
@given(data=st.data(), allow_all=st.booleans(), dns_localhost=st.booleans())
def test_ip_rules_agree(data: st.DataObject, allow_all: bool, dns_localhost: bool) -> None:
    rules = data.draw(ip_rule_sets())
    allow_all = allow_all and data.draw(st.integers(0, 9)) == 0  # rarely: it answers all
    c_policy, ref_policy = compile_both(rules, allow_all=allow_all, dns_localhost=dns_localhost)
    assert_agree(c_policy, ref_policy, data.draw(ip_queries(rules)))


@SETTINGS
@given(data=st.data())
def test_ip_rules_agree_regardless_of_order(data: st.DataObject) -> None:
    """The sweep sorts its input: rule order must not change any answer."""
    rules = data.draw(ip_rule_sets())
    shuffled = data.draw(st.permutations(rules))
    queries = data.draw(ip_queries(rules))
    a, b = C.compile(rules), C.compile(shuffled)
    assert a.intervals == b.intervals
    for host, port in queries:
        assert a.allows(host, port) == b.allows(host, port), (host, port)


def test_whole_spaces_and_their_ends() -> None:
    """/0 blocks and blocks that end on the last address (the sweep's overflow case)."""
    rules = rules_of(
        [
            "0.0.0.0/0:80",
            "255.255.255.255:443",
            "255.255.255.0/24:22",
            "[::/0]:80",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:443",
            "[ffff::/16]:22",
            "[::]:7",
        ]
    )
    c_policy, ref_policy = compile_both(rules)
    queries = [
        (host, port)
        for host in (
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.254",
            "255.255.255.255",
            "255.255.254.255",
            "::",
            "::1",
            "ffff::",
            "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        )
        for port in (7, 22, 79, 80, 81, 443)
    ]
    assert_agree(c_policy, ref_policy, queries)


# --------------------------------------------------------------------------- count_allowed


@SETTINGS
@given(data=st.data(), allow_all=st.booleans())
def test_count_allowed_agrees_with_allows(data: st.DataObject, allow_all: bool) -> None:
    """count_allowed(family, addresses, port) == the number of allows() that say yes."""
    rules = data.draw(ip_rule_sets())
    allow_all = allow_all and data.draw(st.integers(0, 9)) == 0
    policy = C.compile(rules, allow_all=allow_all)
    v4 = [0, 0x7F000001, V4_MAX]
    v6 = [0, 1, MAPPED | 0x7F000001, V6_MAX]
    for r in rules:
        if r.family == 4:
            v4.extend(neighbours(r.first, r.last, V4_MAX))
        else:
            v6.extend(neighbours(r.first, r.last, V6_MAX))
    v4 += data.draw(st.lists(st.integers(0, V4_MAX), max_size=8))
    v6 += data.draw(st.lists(st.integers(0, V6_MAX), max_size=8))
    for port in data.draw(st.lists(st.sampled_from(port_probes(rules)), min_size=1, max_size=4)):
        expected4 = sum(policy.allows(v4_text(a), port) for a in v4)
        assert policy.count_allowed(4, array("I", v4), port) == expected4, (port, v4)
        packed6 = array("Q")
        for a in v6:
            packed6.extend((a >> 64, a & U64))
        expected6 = sum(policy.allows(v6_text(a), port) for a in v6)
        assert policy.count_allowed(6, packed6, port) == expected6, (
            port,
            [v6_text(a) for a in v6],
        )


# --------------------------------------------------------------------------- host rules

LABELS = ["a", "b", "ex", "localhost", "xn--bcher-kva", "x-y", "under_score"]


@st.composite
def names(draw: st.DrawFn) -> str:
    return ".".join(draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=3)))


def respell(rnd: random.Random, name: str) -> str:
    """The same name as a caller might write it: any case, maybe a trailing dot."""
    text = "".join(c.upper() if rnd.random() < 0.3 else c for c in name)
    return text + "." if rnd.random() < 0.3 else text


@SETTINGS
@given(data=st.data(), allow_all=st.booleans(), dns_localhost=st.booleans())
def test_host_rules_agree(data: st.DataObject, allow_all: bool, dns_localhost: bool) -> None:
    texts = []
    for _ in range(data.draw(st.integers(0, 6))):
        name = data.draw(names())
        if data.draw(st.booleans()):
            name = "*." + name
        port_text = data.draw(port_lists())
        texts.append(f"{name}:{port_text}" if port_text else name)
    note(f"rules: {texts}")
    rules = rules_of(texts)
    allow_all = allow_all and data.draw(st.integers(0, 4)) == 0
    c_policy, ref_policy = compile_both(rules, allow_all=allow_all, dns_localhost=dns_localhost)
    ports = port_probes(rules)
    queries: list[tuple[str, int | None]] = []
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(30):
        name = ".".join(rnd.choices(LABELS, k=rnd.randint(1, 4)))
        queries.append((respell(rnd, name), rnd.choice([None, *ports])))
    for r in rules:  # each rule's own name, and names a wildcard stands for
        bare = r.host[2:] if r.host.startswith("*.") else r.host
        for name in (bare, "q." + bare, "q.r." + bare, "q" + bare):
            queries += [(respell(rnd, name), p) for p in (None, *ports)]
    queries += [("localhost", None), ("LOCALHOST.", None), ("a.localhost", None)]
    assert_agree(c_policy, ref_policy, queries)


# --------------------------------------------------------------------------- unix rules

GLOB_CHARS = "/ab.-@*?[]!^"
PATH_CHARS = "/ab.-@[]!^*?"


@SETTINGS
@given(
    globs=st.lists(st.text(GLOB_CHARS, min_size=1, max_size=8), min_size=1, max_size=4),
    paths=st.lists(st.text(PATH_CHARS, max_size=10), min_size=1, max_size=12),
)
def test_unix_globs_agree(globs: list[str], paths: list[str]) -> None:
    """Unix rules are fnmatch globs (``*`` also matches ``/``), in both implementations."""
    texts = []
    for g in globs:
        try:
            texts.append(parse_rule("unix:" + g, source="t").text)
        except ValueError:
            continue
    assume(texts)
    c_policy, ref_policy = compile_both(rules_of(texts))
    queries = [("unix:" + p, None) for p in paths]
    queries += [("unix:" + g, None) for g in globs]  # a glob matched against itself
    assert_agree(c_policy, ref_policy, queries)


# --------------------------------------------------------------------------- blobs


@st.composite
def mixed_rule_sets(draw: st.DrawFn) -> list[Rule]:
    rules = list(draw(ip_rule_sets()))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(names())
        ports = draw(port_lists())
        text = ("*." if draw(st.booleans()) else "") + name
        rules += rules_of([f"{text}:{ports}" if ports else text])
    for _ in range(draw(st.integers(0, 3))):
        rules += rules_of(["unix:" + draw(st.sampled_from(["/run/*.sock", "@ng-*", "*", "/a/b"]))])
    return rules


@SETTINGS
@given(data=st.data(), allow_all=st.booleans(), dns_localhost=st.booleans())
def test_blob_round_trip(data: st.DataObject, allow_all: bool, dns_localhost: bool) -> None:
    """from_bytes(to_bytes()) is the same policy: same answers, byte-identical blob."""
    rules = data.draw(mixed_rule_sets())
    policy = C.compile(rules, allow_all=allow_all, dns_localhost=dns_localhost)
    blob = policy.to_bytes()
    copy = C.from_bytes(blob)
    assert copy.to_bytes() == blob
    assert C.from_bytes(bytearray(blob)).to_bytes() == blob
    assert (copy.flags, copy.intervals, copy.nbytes) == (policy.flags, policy.intervals, len(blob))
    queries: list[tuple[str, int | None]] = list(data.draw(ip_queries(rules)))
    queries += [(r.host.lstrip("*."), p) for r in rules if r.kind == "host" for p in (None, 80)]
    queries += [("unix:/run/x.sock", None), ("unix:@ng-1", None), ("unix:/a/b", None)]
    queries += [("localhost", None), ("example.com", 443)]
    for host, port in queries:
        assert outcome(copy, host, port) == outcome(policy, host, port), (host, port)


@pytest.mark.parametrize("allow_all", [False, True])
def test_reference_blob_round_trip(allow_all: bool) -> None:
    """The reference reads its own format back (each implementation reads only its own)."""
    rules = rules_of(["10.0.0.0/8:443", "[2001:db8::/32]:80", "*.example.com:443", "unix:@x"])
    ref = REF.compile(rules, allow_all=allow_all)
    copy = REF.from_bytes(ref.to_bytes())
    assert copy.to_bytes() == ref.to_bytes()
    with pytest.raises(ValueError):
        C.from_bytes(ref.to_bytes())
    with pytest.raises(ValueError):
        REF.from_bytes(C.compile(rules).to_bytes())


# ----------------------------------------------------------------- large, indexed tables


def _random_rule(rng: random.Random, family: int) -> str:
    """A random CIDR rule with a port set; clustered often, so buckets fill unevenly."""
    if family == 4:
        plen = rng.choice([8, 12, 16, 20, 24, 26, 28, 30, 32])
        addr = rng.getrandbits(32)
        if rng.random() < 0.4:
            addr = 0x0A000000 | rng.getrandbits(20) << 4  # inside 10.0.0.0/8
    else:
        plen = rng.choice([24, 48, 56, 64, 96, 112, 120, 128])
        addr = rng.getrandbits(128)
        if rng.random() < 0.6:
            addr = 0x20010DB8 << 96 | rng.getrandbits(96)  # inside 2001:db8::/32
            plen = max(plen, 56)
    net = ipaddress.ip_network((addr, plen), strict=False)
    ports = rng.choice(["", ":443", ":80,8000-8100", ":1-1024"])
    if family == 6 and ports:
        return f"[{net}]{ports}"
    return f"{net}{ports}"


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("count", [150, 600, 4000])
def test_large_tables_agree(family: int, count: int) -> None:
    # Enough intervals for the C lookup index (64 and more); the reference has none.
    rng = random.Random(count * 10 + family)
    rules = rules_of(_random_rule(rng, family) for _ in range(count))
    c, ref = compile_both(rules)
    if count >= 600:
        assert sum(c.intervals) >= 256  # well into the indexed range
    bits = 32 if family == 4 else 128
    queries: list[int] = []
    for rule in rng.sample(rules, min(len(rules), 120)):
        queries += [rule.first, rule.last, rule.first - 1, rule.last + 1]
        queries.append(rng.randint(rule.first, rule.last))
    queries += [rng.getrandbits(bits) for _ in range(150)]
    for value in queries:
        value %= 1 << bits
        host = str(ipaddress.ip_address(value) if family == 4 else ipaddress.IPv6Address(value))
        for port in (443, 8050):
            assert c.allows(host, port) == ref.allows(host, port), (host, port)


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("/tmp/?", "/tmp/e", True),
        ("/tmp/?", "/tmp/é", False),  # two bytes in UTF-8: '?' matches one byte
        ("/tmp/??", "/tmp/é", True),
        ("/tmp/é*", "/tmp/été.sock", True),
    ],
)
def test_unix_globs_match_bytes(glob: str, path: str, expected: bool) -> None:
    c, ref = compile_both(rules_of([f"unix:{glob}"]))
    assert c.allows(f"unix:{path}") is expected
    assert ref.allows(f"unix:{path}") is expected


# --------------------------------------------------------------------------- base switch


@pytest.mark.parametrize("seed", range(8))
def test_base_switch_sequences_agree(seed: int) -> None:
    # Random sequences of the plugin's per-phase calls (aim, enter, start, mark, leave,
    # the stack's level set and cleared), applied to both implementations in lockstep:
    # every answer, the running phase's owner and the active policy agree after each step.
    rng = random.Random(seed)
    steps = ("aim", "aim", "enter", "enter", "start", "mark", "leave", "leave", "top")
    items = [object() for _ in range(3)]
    owners = [object() for _ in range(3)]
    impls = (C, REF)
    policies = [
        [None, *(impl.compile(rules_of(["127.0.0.0/8"])) for _ in range(2))] for impl in impls
    ]

    def index(value: object, pool: Sequence[object]) -> int | None:
        for i, candidate in enumerate(pool):
            if candidate is value:
                return i
        assert value is None, value
        return None

    C.install(lambda *args: None)  # C activates a policy only with its hooks installed
    try:
        for step in range(400):
            what = rng.choice(steps)
            args: list[Any] = []
            if what == "aim":
                owner = rng.choice([0, 1, 2, None])
                quick = rng.random() < 0.7
                args = [rng.randrange(3), owner, rng.randrange(3), rng.random() < 0.5, quick]
            elif what == "enter":
                args = [rng.randrange(3)]
            elif what == "top":
                args = [rng.random() < 0.5]
            results = []
            for k, impl in enumerate(impls):
                if what == "aim":
                    i, j, p, strict, quick = args
                    owner = None if j is None else owners[j]
                    results.append(impl.aim_base(items[i], owner, policies[k][p], strict, quick))
                elif what == "enter":
                    results.append(impl.enter_base(items[args[0]]))
                elif what == "start":
                    try:
                        impl.start_base()
                        results.append("started")
                    except RuntimeError as exc:
                        results.append(str(exc))
                elif what == "mark":
                    results.append(impl.mark_base())
                elif what == "leave":
                    results.append(index(impl.leave_base(), owners))
                elif args[0]:
                    results.append(impl.activate(None, False))
                else:
                    results.append(impl.deactivate())
            where = f"step {step}: {what} {args}"
            assert results[0] == results[1], where
            assert index(C.base_owner(), owners) == index(REF.base_owner(), owners), where
            assert index(C.active(), policies[0]) == index(REF.active(), policies[1]), where
    finally:
        C.uninstall()
        REF.deactivate()
        REF.leave_base()
        REF.aim_base(None, None, None, False, False)
