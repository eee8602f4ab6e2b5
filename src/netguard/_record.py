"""Frozen value classes without the start-up cost of :mod:`dataclasses`.

``@dataclass`` writes each class's methods as source text and compiles it with ``exec``
when the module is imported: about a millisecond per class on CPython 3.11, paid by every
pytest run that loads the plugin. netguard's value classes (:class:`netguard.rules.Rule`,
:class:`netguard.config.Settings`, :class:`netguard.errors.Violation`, ...) write their
``__init__`` out instead and inherit the rest from :class:`Record`, driven by the class's
``__slots__``, which list its fields in the order ``__init__`` takes them:

* ``repr()`` of every field (except those in ``_hidden``);
* equality and hashing over the fields, in order, between instances of the same class;
* no assignment or deletion of a field once ``__init__`` has run (``AttributeError``);
* :meth:`Record.replace`, a copy with some fields changed;
* ``pickle`` and ``copy``, through ``__init__``.

``__init__`` sets each field with ``object.__setattr__`` (see :data:`init`).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

__all__ = ["Record", "init"]

_R = TypeVar("_R", bound="Record")

#: What a record's ``__init__`` sets its fields with: ``init(self, "name", value)``.
init = object.__setattr__


class Record:
    """The base of netguard's frozen value classes (see the module's docstring)."""

    __slots__ = ()
    #: fields that ``repr()`` leaves out
    _hidden: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if name not in self._hidden
        )
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined, no-any-return]

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())

    def replace(self: _R, **changes: Any) -> _R:
        """A copy of this record with the fields named in ``changes`` set to new values."""
        for name in changes:
            if name not in self.__slots__:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)
