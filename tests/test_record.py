"""The frozen value classes (netguard._record.Record): what they promise as values.

Rule, Violation, Settings, Option and Impl are plain classes written out instead of
dataclasses (start-up cost); these tests pin what the dataclasses gave and code relies on:
frozen fields, equality and hashing by value, repr, replace(), pickle and copy.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from netguard import _impl
from netguard._record import Record
from netguard.config import OPTIONS, Settings
from netguard.errors import Violation
from netguard.rules import Rule, parse_rule


def _violation(**changes: Any) -> Violation:
    v = Violation("connect", 2, "192.0.2.1", 443, "192.0.2.1:443", "MainThread", 1.5)
    return v.replace(**changes)


RECORDS = {
    "rule": lambda: parse_rule("192.0.2.0/24:443,8000-8100", source="--netguard-allow[1]"),
    "violation": lambda: _violation(test="t.py::test_a", size="small", phase="call"),
    "settings": lambda: Settings(mode="strict", mode_source="environment NETGUARD_MODE"),
    "option": lambda: OPTIONS[0],
    "impl": lambda: _impl.load("python"),
}


@pytest.fixture(params=sorted(RECORDS))
def record(request: pytest.FixtureRequest) -> Record:
    made: Record = RECORDS[request.param]()
    return made


def test_fields_cannot_be_assigned_or_deleted(record: Record) -> None:
    name = record.__slots__[0]
    before = getattr(record, name)
    with pytest.raises(AttributeError, match=f"frozen: cannot assign to '{name}'"):
        setattr(record, name, "changed")
    with pytest.raises(AttributeError, match=f"frozen: cannot delete '{name}'"):
        delattr(record, name)
    with pytest.raises(AttributeError):
        record.not_a_field = 1  # type: ignore[attr-defined]
    assert getattr(record, name) is before
    assert not hasattr(record, "__dict__")


def test_equal_by_value_and_hashable(record: Record) -> None:
    again = copy.copy(record)
    assert again == record and not (again != record)
    assert hash(again) == hash(record)
    assert len({record, again}) == 1
    changed = record.replace(**{record.__slots__[1]: "other"})
    assert changed != record
    assert record != object() and record != tuple(record._values())


def test_replace_copies_and_checks_names(record: Record) -> None:
    first = record.__slots__[0]
    copy_ = record.replace(**{first: "new"})
    assert getattr(copy_, first) == "new"
    assert type(copy_) is type(record)
    assert all(getattr(copy_, f) == getattr(record, f) for f in record.__slots__[1:])
    with pytest.raises(TypeError, match="has no field 'nonsense'"):
        record.replace(nonsense=1)


@pytest.mark.parametrize("name", ["rule", "violation", "settings", "option"])  # Impl: its own
def test_repr_names_every_field(name: str) -> None:
    record = RECORDS[name]()
    text = repr(record)
    assert text.startswith(type(record).__qualname__ + "(")
    for name in record.__slots__:
        assert f"{name}={getattr(record, name)!r}" in text


@pytest.mark.parametrize("name", ["rule", "violation", "settings", "option"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_and_deepcopy_round_trip(name: str, protocol: int) -> None:
    record = RECORDS[name]()
    back = pickle.loads(pickle.dumps(record, protocol))
    assert back == record and type(back) is type(record)
    assert copy.deepcopy(record) == record


def test_rule_equality_counts_text_and_source() -> None:
    a = parse_rule("192.0.2.0/24:443", source="a")
    b = parse_rule("192.0.2.0/24:443", source="b")
    c = parse_rule("192.0.2.0/24:443-443", source="a")
    assert a != b and a != c
    assert a == b.replace(source="a") == c.replace(text=a.text)
    assert isinstance(a, Rule) and str(a) == str(c)


def test_compiled_policy_info_compares_by_identity() -> None:
    from netguard.policy import PolicySet

    policies = PolicySet((), impl=_impl.load("python"))
    info = policies.for_test("medium")
    assert info == info and info != info.replace()
    assert "_entries" not in repr(info)
