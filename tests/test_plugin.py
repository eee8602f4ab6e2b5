"""The pytest plugin, through real pytest runs (pytester, in subprocesses).

Each inner run loads netguard through its ``pytest11`` entry point, as a user's would.
Destinations other than loopback appear only where they are blocked (nothing is sent), or
as UDP ``connect`` calls in a run that lets them through: those runs use ``run_in_netns``,
a private network namespace of their own, where the call fails in the kernel.
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET

import pytest

from pluginrun import UDP, run, run_in_netns

pytestmark = pytest.mark.usefixtures("clean_netguard_env")


def test_strict_mode_by_size(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_sizes="""
        import pytest
        from helpers import udp_connect

        def test_unmarked_is_small_and_blocked():
            udp_connect("127.0.0.1")

        def test_small_pure_logic():
            assert 1 + 1 == 2

        @pytest.mark.medium
        def test_medium_loopback():
            udp_connect("127.0.0.1")
            udp_connect("::1")

        @pytest.mark.medium
        def test_medium_outside_blocked():
            udp_connect("192.0.2.10", 443)

        @pytest.mark.large
        def test_large_anything():
            udp_connect("192.0.2.10", 443)

        @pytest.mark.xlarge
        def test_xlarge_anything():
            udp_connect("198.51.100.7", 53)

        @pytest.mark.allow_network
        def test_allow_network():
            udp_connect("203.0.113.5", 80)

        @pytest.mark.netguard(allow=["127.0.0.1:9"])
        def test_small_with_a_rule():
            udp_connect("127.0.0.1", 9)

        @pytest.mark.netguard(allow=["127.0.0.1:9"])
        def test_small_rule_port_only():
            udp_connect("127.0.0.1", 10)

        @pytest.mark.medium
        class TestMediumClass:
            def test_in_class(self):
                udp_connect("127.0.0.1")

            @pytest.mark.small
            def test_function_marker_wins(self):
                udp_connect("127.0.0.1")
        """,
    )
    result = run_in_netns(pytester, "--netguard-mode=strict", "-rf")  # large ones go out
    result.assert_outcomes(passed=7, failed=4)
    failed = {line.split(" ")[1] for line in result.outlines if line.startswith("FAILED ")}
    assert failed == {
        "test_sizes.py::test_unmarked_is_small_and_blocked",
        "test_sizes.py::test_medium_outside_blocked",
        "test_sizes.py::test_small_rule_port_only",
        "test_sizes.py::TestMediumClass::test_function_marker_wins",
    }
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 127.0.0.1:9",
            "*test: test_sizes.py::test_unmarked_is_small_and_blocked (size small, phase call)",
            "*mark the test @pytest.mark.medium*",
            "*NG001 in docs/messages.md#ng001",
        ]
    )
    result.stdout.fnmatch_lines(["*netguard blocked connect to 192.0.2.10:443"])


def test_failure_text_names_everything(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_one="""
        import socket
        from helpers import udp_connect

        def test_dns():
            socket.getaddrinfo("api.weather.example", 443)
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked getaddrinfo of dns:api.weather.example:443",
            "*test: test_one.py::test_dns (size small, phase call)",
            "*NG002*",
        ]
    )


def test_swallowed_violation_still_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_swallow="""
        import socket
        from helpers import udp_connect

        def test_swallows():
            try:
                udp_connect("192.0.2.10", 443)
            except OSError:
                pass  # the code under test hides the error

        def test_swallows_in_a_thread():
            import threading
            def work():
                try:
                    udp_connect("192.0.2.11", 443)
                except OSError:
                    pass
            t = threading.Thread(target=work)
            t.start()
            t.join()
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 192.0.2.10:443",
            "*the code under test swallowed this error (1 violation)",
        ]
    )
    result.stdout.fnmatch_lines(["*netguard blocked connect to 192.0.2.11:443"])


def test_fixture_phases_are_attributed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_fix="""
        import pytest
        from helpers import udp_connect

        @pytest.fixture(scope="session")
        def session_resource():
            udp_connect("127.0.0.1")  # runs under the first test that asks for it
            yield

        @pytest.fixture
        def bad_teardown():
            yield
            udp_connect("127.0.0.1", 12)

        @pytest.mark.medium
        def test_medium_sets_up_the_session_fixture(session_resource):
            pass

        def test_small_reuses_it(session_resource):
            pass

        def test_small_teardown(bad_teardown):
            pass
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    # the teardown error is reported besides the passed call of the same test
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 127.0.0.1:12",
            "*test: test_fix.py::test_small_teardown (size small, phase teardown)",
        ]
    )


@pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="pytest's subtests came with pytest 9"
)
def test_subtests_leave_the_guard_in_place(pytester: pytest.Pytester) -> None:
    # pytest reports each subtest (the subtests fixture, unittest's subTest) through
    # pytest_runtest_makereport in the middle of the call phase; the rest of the test is
    # still the call phase, under the test's guard
    pytester.makepyfile(
        helpers=UDP,
        test_sub="""
        import unittest
        import pytest
        from helpers import udp_connect

        def test_after_a_subtest(subtests):
            with subtests.test(msg="first"):
                pass
            udp_connect("127.0.0.1", 10)

        def test_in_a_later_subtest(subtests):
            with subtests.test(msg="first"):
                pass
            with subtests.test(msg="second"):
                udp_connect("127.0.0.1", 11)

        class TestCase(unittest.TestCase):
            def test_after_a_unittest_subtest(self):
                with self.subTest(n=1):
                    pass
                udp_connect("127.0.0.1", 12)

        @pytest.mark.medium
        def test_medium_after_a_subtest(subtests):
            with subtests.test(msg="first"):
                pass
            udp_connect("127.0.0.1", 13)
        """,
    )
    result = run(pytester, "--netguard-mode=strict", "-rA")
    result.stdout.fnmatch_lines_random(
        [
            "FAILED test_sub.py::test_after_a_subtest - netguard.NetworkViolationError*",
            # the subtest fails with the violation, and so does its test, as pytest fails
            # a test with a failed subtest
            "SUBFAILED*second* test_sub.py::test_in_a_later_subtest - netguard.Network*",
            "FAILED test_sub.py::test_in_a_later_subtest - netguard.NetworkViolationError*",
            "FAILED test_sub.py::TestCase::test_after_a_unittest_subtest - netguard.Netw*",
            "PASSED test_sub.py::test_medium_after_a_subtest",
        ]
    )
    result.stdout.fnmatch_lines_random(
        [
            "*netguard blocked connect to 127.0.0.1:10",
            "*netguard blocked connect to 127.0.0.1:11",
            "*netguard blocked connect to 127.0.0.1:12",
            "*test: test_sub.py::test_after_a_subtest (size small, phase call)",
        ]
    )
    assert "127.0.0.1:13" not in result.stdout.str()


def test_session_fixture_set_up_by_a_small_test_is_blocked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_fix="""
        import pytest
        from helpers import udp_connect

        @pytest.fixture(scope="session")
        def session_resource():
            udp_connect("127.0.0.1")
            yield

        def test_small_first(session_resource):
            pass
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*(size small, phase setup)"])


def test_warn_mode_lets_calls_through_and_warns_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_warn="""
        from helpers import udp_connect

        def test_three_calls():
            for _ in range(3):
                udp_connect("127.0.0.1")
            udp_connect("127.0.0.2")

        def test_again():  # another test: warned about again
            udp_connect("127.0.0.1")
        """,
    )
    result = run(pytester, "--netguard-mode=warn", "-W", "default")
    result.assert_outcomes(passed=2, warnings=3)
    result.stdout.fnmatch_lines(
        [
            "*NetworkViolationWarning: netguard let through connect to 127.0.0.1:9*",
            "*5 network call(s) let through (warn mode):*",
        ]
    )
    # as errors, the warnings block the calls as strict mode would; the swallowed one
    # still fails its test
    pytester.makepyfile(
        test_swallow="""
        from helpers import udp_connect

        def test_swallowed():
            try:
                udp_connect("127.0.0.1")
            except OSError:
                pass
        """
    )
    strict = run(pytester, "--netguard-mode=warn", "-W", "error::netguard.NetworkViolationWarning")
    strict.assert_outcomes(failed=3)
    strict.stdout.fnmatch_lines(
        [
            "*NetworkViolationError: netguard blocked connect to 127.0.0.1:9*",
            "*note: the code under test swallowed this error (1 violation)*",
            "*note: warn mode, but a warnings filter turned NetworkViolationWarning into an*",
        ]
    )


@pytest.mark.parametrize("mode", ["strict", "warn", "off"])
def test_pytest_socket_alongside_is_named(pytester: pytest.Pytester, mode: str) -> None:
    # A stand-in module with pytest-socket's module name, loaded as a plugin.
    pytester.makepyfile(pytest_socket="def pytest_runtest_setup(item):\n    pass\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    pytester.syspathinsert()
    result = run(pytester, f"--netguard-mode={mode}", "-p", "pytest_socket", "-W", "default")
    result.assert_outcomes(passed=1)
    if mode == "off":
        result.stdout.no_fnmatch_line("*pytest-socket is loaded*")
        return
    missed = "warn mode misses connects" if mode == "warn" else "strict mode still blocks"
    result.stdout.fnmatch_lines(
        [f"*netguard: pytest-socket is loaded as well;*({missed}*-p no:socket*"]
    )
    # an ordinary plugin is not mistaken for it
    pytester.makepyfile(socket_helpers="def pytest_runtest_setup(item):\n    pass\n")
    result = run(pytester, f"--netguard-mode={mode}", "-p", "socket_helpers", "-W", "default")
    result.stdout.no_fnmatch_line("*pytest-socket is loaded*")


def test_off_mode_patches_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off="""
        import socket, sys

        def test_nothing_patched():
            assert "connect" not in socket.socket.__dict__
            assert "netguard._netguard" not in sys.modules
            assert "netguard._session" not in sys.modules
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["netguard: off (default); nothing is checked"])
    result = run(pytester, "--netguard-mode=off")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["netguard: off (command line --netguard-mode); nothing is checked"]
    )


@pytest.mark.parametrize("mode", ["off", "strict"])
def test_netguard_modules_bypass_assertion_rewriting(pytester: pytest.Pytester, mode: str) -> None:
    # pytest would load every module of netguard's distribution through its
    # assertion-rewriting hook: slow to read, and parsed again in every run where the
    # rewritten bytecode cannot be cached. Only the two it imports itself are its.
    pytester.makepyfile(
        test_loaders="""
        import sys

        def test_loaders():
            for name in sorted(n for n in sys.modules if n.startswith("netguard")):
                print("LOADER", name, type(sys.modules[name].__spec__.loader).__name__)
        """,
    )
    result = run(pytester, f"--netguard-mode={mode}", "-s")
    result.assert_outcomes(passed=1)
    loaders = dict(re.findall(r"LOADER (\S+) (\S+)", result.stdout.str()))
    rewritten = {name for name, loader in loaders.items() if loader == "AssertionRewritingHook"}
    assert rewritten == {"netguard", "netguard.plugin"}
    assert loaders["netguard.config"] == "SourceFileLoader"
    if mode == "strict":
        assert loaders["netguard._session"] == "SourceFileLoader"
        assert loaders["netguard._netguard"] == "ExtensionFileLoader"


def test_header_and_precedence(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nnetguard_mode = warn\nnetguard_default_size = medium\n")
    pytester.makepyfile(test_h="def test_ok(): pass")
    result = run(pytester)
    result.stdout.fnmatch_lines(
        ["netguard: mode warn, default size medium, 0 allow rule(s), implementation c (*)"]
    )
    monkeypatch.setenv("NETGUARD_MODE", "strict")
    result = run(pytester)
    result.stdout.fnmatch_lines(["netguard: mode strict, default size medium*"])
    result = run(pytester, "--netguard-mode=off")
    result.stdout.fnmatch_lines(["netguard: off (command line --netguard-mode)*"])


@pytest.mark.parametrize(
    ("args", "env", "ini", "message"),
    [
        (
            (),
            {"NETGUARD_MODE": "strictt"},
            "",
            "*netguard: NETGUARD_MODE='strictt' from the environment: "
            "expected strict, warn or off*",
        ),
        (
            ("--netguard-default-size=huge",),
            {},
            "",
            "*--netguard-default-size*huge*small*medium*large*xlarge*",
        ),
        ((), {}, "netguard_mode = bogus", "*netguard_mode*bogus*"),
        (
            ("--netguard-mode=strict", "--netguard-allow=10.0.0.1/8"),
            {},
            "",
            "*--netguard-allow*invalid rule '10.0.0.1/8': "
            "host bits set; did you mean 10.0.0.0/8?*",
        ),
        ((), {"NETGUARD_VERBOSE": "maybe"}, "", "*NETGUARD_VERBOSE*maybe*"),
    ],
)
def test_bad_configuration_is_a_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    ini: str,
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_x="def test_ok(): pass")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_config_rules_extend_medium_not_small(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_rules="""
        import pytest
        from helpers import udp_connect

        @pytest.mark.medium
        def test_medium_gets_the_rule():
            udp_connect("192.0.2.1", 9)

        def test_small_does_not():
            udp_connect("192.0.2.1", 9)
        """,
    )
    result = run_in_netns(pytester, "--netguard-mode=strict", "--netguard-allow=192.0.2.0/24:9")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*1 allow rule(s)*"])


def test_allowlist_file(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml",
        allow="""
        version = 1

        [[allowlist]]
        name = "docs net"
        cidr = "192.0.2.0/24"
        port = 9
        """,
    )
    pytester.makepyfile(
        helpers=UDP,
        test_file="""
        import pytest
        from helpers import udp_connect

        @pytest.mark.medium
        def test_allowed_by_file():
            udp_connect("192.0.2.1", 9)
        """,
    )
    result = run_in_netns(pytester, "--netguard-mode=strict", "--netguard-allowlist=allow.toml")
    result.assert_outcomes(passed=1)


def test_marker_errors_fail_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_markers="""
        import pytest

        @pytest.mark.small
        @pytest.mark.large
        def test_two_sizes():
            pass

        @pytest.mark.netguard(allow=["10.0.0.1/8"])
        def test_bad_rule():
            pass
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["netguard: test_markers.py::test_two_sizes: conflicting size markers*large*small*"]
    )
    assert "During handling" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "netguard: @pytest.mark.netguard(allow=...) on test_markers.py::test_bad_rule: "
            "invalid rule '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?"
        ]
    )


def test_collection_runs_under_the_default_size(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_import_time="""
        from helpers import udp_connect

        udp_connect("127.0.0.1")  # at import: collection, default size

        def test_never_runs():
            pass
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*netguard blocked connect to 127.0.0.1:9*",
            "*<collection>*",
            "*at:   helpers.py:* (udp_connect)",  # the call site, in the user's code
            "*move the call into a fixture or into the test that needs it*",
            "*--netguard-default-size=medium allows it*",
        ]
    )
    result.stdout.no_fnmatch_line("*@pytest.mark*")  # no marker applies at import time
    result = run(pytester, "--netguard-mode=strict", "--netguard-default-size=medium")
    result.assert_outcomes(passed=1)


def test_collection_swallowed_violation_fails_the_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_import_swallow="""
        from helpers import udp_connect

        try:
            udp_connect("192.0.2.1")
        except OSError:
            pass

        def test_never_runs():
            pass
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*swallowed this error*"])


def test_summary_and_junit_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_sum="""
        from helpers import udp_connect

        def test_a():
            udp_connect("127.0.0.1")

        def test_b():
            udp_connect("127.0.0.1")
        """,
    )
    result = run(pytester, "--netguard-mode=strict", "--junitxml=out.xml")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*= netguard =*",
            "2 network call(s) blocked:",
            "  test_sum.py::test_a (small)",
            "    call: connect 127.0.0.1:9 [NG001]",
            "  test_sum.py::test_b (small)",
            "by destination:",
            "      2  127.0.0.1:9",
        ]
    )
    tree = ET.parse(pytester.path / "out.xml")
    props = [(p.get("name"), p.get("value")) for p in tree.iter("property")]
    assert props == [("netguard_ng001", "127.0.0.1:9")] * 2


def test_loopback_server_in_a_medium_test(pytester: pytest.Pytester) -> None:
    # an end-to-end medium test: a real TCP server on loopback, requests through http.client
    pytester.makepyfile(
        test_server="""
        import http.client, http.server, threading
        import pytest

        @pytest.fixture
        def server():
            httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            t = threading.Thread(target=httpd.serve_forever)
            t.start()
            yield httpd.server_address[1]
            httpd.shutdown()
            httpd.server_close()
            t.join()

        @pytest.mark.medium
        def test_get(server):
            conn = http.client.HTTPConnection("localhost", server, timeout=5)
            conn.request("HEAD", "/")
            assert conn.getresponse().status == 200
            conn.close()

        def test_small_cannot(server):
            conn = http.client.HTTPConnection("127.0.0.1", server, timeout=5)
            with pytest.raises(OSError):
                conn.request("HEAD", "/")
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    # the small test expected the error, but a violation is never lost: it fails too
    result.assert_outcomes(passed=1, failed=1)


def test_no_socket_is_leaked_by_a_blocked_call(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_leak="""
        import gc, socket, warnings
        import pytest

        def test_create_connection():
            with warnings.catch_warnings():
                warnings.simplefilter("error", ResourceWarning)
                with pytest.raises(OSError):
                    socket.create_connection(("192.0.2.10", 443), timeout=1)
                gc.collect()
        """,
    )
    result = run(pytester, "--netguard-mode=strict", "-W", "error::ResourceWarning")
    # the call fails inside, and the violation fails the test; no ResourceWarning error
    result.assert_outcomes(failed=1)
    assert "ResourceWarning" not in result.stdout.str()


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.small:*",
            "@pytest.mark.medium:*",
            "@pytest.mark.large:*",
            "@pytest.mark.xlarge:*",
            "@pytest.mark.allow_network:*",
            "@pytest.mark.netguard(allow=[[]RULE, ...[]]):*",
        ]
    )
    assert socket.socket.__dict__.get("connect") is None  # this process: untouched


def test_xdist_workers_enforce_and_the_controller_sums_up(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        helpers=UDP,
        test_x="""
        import pytest
        from helpers import udp_connect

        @pytest.mark.parametrize("n", range(6))
        def test_small(n):
            udp_connect("127.0.0.1", 100 + n)

        @pytest.mark.medium
        @pytest.mark.parametrize("n", range(4))
        def test_medium(n):
            udp_connect("127.0.0.1", 100 + n)
        """,
    )
    result = run(pytester, "--netguard-mode=strict", "-n", "2")
    result.assert_outcomes(passed=4, failed=6)
    result.stdout.fnmatch_lines(["*= netguard =*", "6 network call(s) blocked:"])
    for n in range(6):
        result.stdout.fnmatch_lines([f"  test_x.py::test_small[[]{n}[]] (small)"])


REPORTED = """
import socket
import pytest
from helpers import udp_connect

@pytest.mark.medium
def test_medium():
    udp_connect("127.0.0.1", 9)
    socket.getaddrinfo("localhost", 80)

@pytest.mark.netguard(allow=["127.0.0.1:10"])
def test_small_with_rule():
    udp_connect("127.0.0.1", 10)

def test_small():
    udp_connect("127.0.0.1", 11)
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_json_report_has_every_event(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(helpers=UDP, test_rep=REPORTED)
    extra = ("-n", "2") if xdist else ()
    result = run(pytester, "--netguard-mode=strict", "--netguard-report=out.json", *extra)
    result.assert_outcomes(passed=2, failed=1)
    document = json.loads((pytester.path / "out.json").read_text())
    assert document["schema"] == "netguard-report/1"
    assert document["mode"] == "strict"
    assert document["implementation"] == "c"
    events = sorted(
        (e["test"], e["operation"], e["destination"], e["verdict"], e["rule"])
        for e in document["events"]
    )
    assert events == [
        ("test_rep.py::test_medium", "connect", "127.0.0.1:9", "allowed", "127.0.0.0/8"),
        ("test_rep.py::test_medium", "getaddrinfo", "dns:localhost:80", "allowed", "localhost"),
        ("test_rep.py::test_small", "connect", "127.0.0.1:11", "blocked", None),
        (
            "test_rep.py::test_small_with_rule",
            "connect",
            "127.0.0.1:10",
            "allowed",
            "127.0.0.1:10",
        ),
    ]
    for e in document["events"]:
        assert set(e) == {
            "test",
            "phase",
            "size",
            "operation",
            "family",
            "destination",
            "verdict",
            "rule",
            "rule_name",
        }


def test_verbose_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(helpers=UDP, test_rep=REPORTED)
    result = run(pytester, "--netguard-mode=strict", "--netguard-verbose")
    result.stdout.fnmatch_lines(
        [
            "every network event:",
            "TEST*FAMILY*ADDR:PORT*STATUS*RULE",
            "test_rep.py::test_medium*inet*127.0.0.1:9*ALLOWED*127.0.0.0/8 (IPv4 loopback)",
            "test_rep.py::test_medium*dns*dns:localhost:80*ALLOWED*localhost*",
            "test_rep.py::test_small_with_rule*inet*127.0.0.1:10*ALLOWED*127.0.0.1:10*",
            "test_rep.py::test_small *inet*127.0.0.1:11*BLOCKED*-",
        ]
    )


def test_warn_mode_report_marks_warned_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(helpers=UDP, test_rep=REPORTED)
    result = run(pytester, "--netguard-mode=warn", "--netguard-report=out.json")
    result.assert_outcomes(passed=3, warnings=1)
    document = json.loads((pytester.path / "out.json").read_text())
    verdicts = {(e["destination"], e["verdict"]) for e in document["events"]}
    assert ("127.0.0.1:11", "warned") in verdicts
    assert ("127.0.0.1:9", "allowed") in verdicts


def test_socketpair_fallback_is_exempt(pytester: pytest.Pytester) -> None:
    # On Windows socket.socketpair is Python: a listener and a connect on loopback, which
    # asyncio's event loops use. netguard exempts that function (thread-locally); on Linux
    # the exemption is exercised through the same fallback, called directly.
    pytester.makepyfile(
        test_pair="""
        import asyncio, socket
        from netguard._guard import exempt_loopback

        def fallback_socketpair():
            fallback = getattr(socket, "_fallback_socketpair", None)  # 3.12+
            if fallback is not None:
                return fallback()
            with socket.socket() as listener:  # what socket.py does on Windows
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                a = socket.socket()
                a.connect(listener.getsockname())
                b, _ = listener.accept()
                return a, b

        def test_exempted_fallback_works_in_a_small_test():
            a, b = exempt_loopback(fallback_socketpair)()
            a.sendall(b"x")
            assert b.recv(1) == b"x"
            a.close()
            b.close()

        def test_the_same_call_unexempted_is_blocked():
            fallback_socketpair()

        def test_an_event_loop_runs_in_a_small_test():
            assert asyncio.run(asyncio.sleep(0, result=42)) == 42
        """,
    )
    result = run(pytester, "--netguard-mode=strict")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_the_same_call_unexempted_is_blocked*"])


@pytest.mark.parametrize("how", ["pytest.exit('stop')", "raise KeyboardInterrupt"])
def test_a_phase_cut_short_leaves_the_guard(pytester: pytest.Pytester, how: str) -> None:
    # pytest.exit() and KeyboardInterrupt end the run in the middle of a phase: the
    # phase's wrapper leaves the guard on its way out, and the session ends cleanly,
    # hooks uninstalled.
    pytester.makepyfile(
        test_cut=f"""
        import pytest

        def test_first():
            pass

        def test_cut():
            {how}
        """
    )
    result = run(pytester, "--netguard-mode=strict")
    assert result.ret in (pytest.ExitCode.INTERRUPTED, 2)
    output = "\n".join(result.outlines + result.errlines)
    assert "RuntimeError" not in output and "INTERNALERROR" not in output
    result.stdout.fnmatch_lines(["*1 passed*"])
