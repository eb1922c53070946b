"""The machinery under the typed model: one wrapper class per XML element.

Learned from virt-manager's ``virtinst/xmlbuilder.py``:

- an :class:`XMLNode` wraps one lxml element and knows only its own tag;
- its fields are descriptors (:class:`StrProperty`, :class:`IntProperty`, ...) mapped to a
  small path relative to that element: ``"name"`` (text of a child), ``"@type"`` (an
  attribute), ``"target/@dev"`` (an attribute of a child), ``"."`` (the element's own text),
  ``"metadata/corral:vm/@id"`` (a child in one of :data:`NAMESPACES`);
- reading never changes the XML; writing creates the missing elements of the path, placed
  in the order the class declares (``CHILD_ORDER``); writing ``None`` removes the attribute
  (or the element, for a text path) and prunes path elements left empty;
- everything the classes do not know is kept as it is, so read-modify-write of libvirt's
  XML loses nothing.

Paths are deliberately not XPath: only child steps and one final attribute, so every path
can be both read and created.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from lxml import etree

from corral.errors import InvalidInput

CORRAL_NS = "https://corral.dev/xmlns/vm/1"
"""The namespace of corral's own ``<metadata>`` element."""

NAMESPACES: dict[str, str] = {"corral": CORRAL_NS}
"""Prefixes usable in property paths, and written on elements created in those namespaces."""

_PREFIX_OF: dict[str, str] = {uri: prefix for prefix, uri in NAMESPACES.items()}

T = TypeVar("T")
N = TypeVar("N", bound="XMLNode")

Element = etree._Element


def qualify(name: str) -> str:
    """``"corral:vm"`` -> ``"{https://corral.dev/xmlns/vm/1}vm"``; plain names unchanged."""
    prefix, sep, local = name.partition(":")
    if not sep:
        return name
    try:
        return f"{{{NAMESPACES[prefix]}}}{local}"
    except KeyError:
        raise ValueError(f"unknown namespace prefix {prefix!r} in {name!r}") from None


def _new_element(tag: str) -> Element:
    if tag.startswith("{"):
        uri = tag[1:].partition("}")[0]
        prefix = _PREFIX_OF.get(uri)
        if prefix is not None:
            return etree.Element(tag, nsmap={prefix: uri})
    return etree.Element(tag)


def _is_element(node: Element) -> bool:
    # Comments and processing instructions have a non-str tag.
    return isinstance(node.tag, str)


def insert_ordered(parent: Element, child: Element, order: Sequence[str]) -> None:
    """Insert ``child`` before the first sibling whose tag comes later in ``order``."""
    if child.tag in order:
        later = set(order[order.index(child.tag) + 1 :])
        for index, sibling in enumerate(parent):
            if _is_element(sibling) and sibling.tag in later:
                parent.insert(index, child)
                return
    parent.append(child)


def _is_empty(el: Element) -> bool:
    return not el.attrib and len(el) == 0 and not (el.text or "").strip()


def _indent(el: Element, level: int = 0, space: str = "  ") -> None:
    if len(el):
        inner = "\n" + space * (level + 1)
        if not (el.text or "").strip():
            el.text = inner
        last: Element | None = None
        for child in el:
            _indent(child, level + 1, space)
            if not (child.tail or "").strip():
                child.tail = inner
            last = child
        if last is not None and not (last.tail or "").strip():
            last.tail = "\n" + space * level


def parse_xml(text: str | bytes, what: str = "XML") -> Element:
    """Parse untrusted XML text: no entities, no network, whitespace-only text dropped."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False)
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"{what} is not well-formed: {exc}", field="xml") from exc
    return root


class PropPath:
    """A parsed property path: child steps (qualified tags) and an optional attribute."""

    __slots__ = ("attr", "steps", "text")

    def __init__(self, path: str) -> None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        self.attr: str | None = None
        if parts and parts[-1].startswith("@"):
            self.attr = parts.pop()[1:]
        if any(p.startswith("@") for p in parts):
            raise ValueError(f"attribute step in the middle of path {path!r}")
        self.steps: tuple[str, ...] = tuple(qualify(p) for p in parts)
        self.text = path


class XMLNode:
    """One libvirt XML element. Subclasses set ``TAG`` and declare properties.

    ``XMLNode()`` makes a new, detached element; ``XMLNode(element)`` wraps an existing one;
    ``cls.from_xml(text)`` parses. Nodes reached through :class:`Child` are *lazy*: they look
    their element up on each access and create it only when something is written.
    """

    TAG: ClassVar[str]
    CHILD_ORDER: ClassVar[tuple[str, ...]] = ()
    """Tags of direct children in the order libvirt writes them; new children go there."""

    _order: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._order = tuple(qualify(t) for t in cls.CHILD_ORDER)

    def __init__(self, element: Element | None = None) -> None:
        tag = qualify(self.TAG)
        if element is None:
            element = _new_element(tag)
        elif element.tag != tag:
            raise ValueError(f"{type(self).__name__} wraps <{self.TAG}>, not <{element.tag}>")
        self._el: Element | None = element
        self._parent: XMLNode | None = None

    @classmethod
    def _lazy(cls, parent: XMLNode) -> Self:
        node = cls.__new__(cls)
        node._el = None
        node._parent = parent
        return node

    @classmethod
    def from_xml(cls, text: str | bytes) -> Self:
        """Parse ``text`` whose root element must be this class's tag."""
        root = parse_xml(text, f"<{cls.TAG}> XML")
        if root.tag != qualify(cls.TAG):
            raise InvalidInput(f"expected a <{cls.TAG}> document, got <{root.tag}>", field="xml")
        return cls(root)

    # -- element access --------------------------------------------------------------

    def _element(self, create: bool) -> Element | None:
        if self._parent is None:
            return self._el
        parent = self._parent._element(create)
        if parent is None:
            return None
        tag = qualify(self.TAG)
        found = parent.find(tag)
        if found is None and create:
            found = _new_element(tag)
            insert_ordered(parent, found, self._parent._order)
        return found

    @property
    def element(self) -> Element:
        """The lxml element (created, with its parents, if this lazy node had none yet)."""
        el = self._element(create=True)
        assert el is not None
        return el

    @property
    def exists(self) -> bool:
        """Whether the element is present (always true except for lazy child nodes)."""
        return self._element(create=False) is not None

    def to_xml(self) -> str:
        """Pretty XML text of this element (two-space indent, trailing newline)."""
        el = self._element(create=False)
        if el is None:
            return ""
        clone = copy.deepcopy(el)
        clone.tail = None
        _indent(clone)
        return etree.tostring(clone, encoding="unicode") + "\n"

    def __repr__(self) -> str:
        state = "" if self.exists else " (absent)"
        return f"<{type(self).__name__} <{self.TAG}>{state}>"

    # -- children --------------------------------------------------------------------

    def add(self, child: XMLNode) -> None:
        """Attach a detached node (e.g. a new ``Disk()``) as a child, in ``CHILD_ORDER``."""
        el = child._el if child._parent is None else None
        if el is None or el.getparent() is not None:
            raise ValueError(f"{child!r} is already part of a document")
        insert_ordered(self.element, el, self._order)

    def remove(self, child: XMLNode) -> None:
        """Remove a child element (e.g. one of ``devices.disks``); absent lazy nodes are a no-op."""
        el = child._element(create=False)
        if el is None:
            return
        mine = self._element(create=False)
        if mine is None or el.getparent() is not mine:
            raise ValueError(f"{child!r} is not a child of {self!r}")
        mine.remove(el)  # a wrapper from a list keeps its element: it can be added again

    # -- raw values ------------------------------------------------------------------

    def _find(self, path: PropPath) -> Element | None:
        el = self._element(create=False)
        for step in path.steps:
            if el is None:
                return None
            el = el.find(step)
        return el

    def _get_raw(self, path: PropPath) -> str | None:
        el = self._find(path)
        if el is None:
            return None
        if path.attr is not None:
            return el.get(path.attr)
        return el.text

    def _set_raw(self, path: PropPath, value: str | None) -> None:
        if value is None:
            self._clear_raw(path)
            return
        el = self.element
        order = self._order
        for step in path.steps:
            found = el.find(step)
            if found is None:
                found = _new_element(step)
                insert_ordered(el, found, order)
            el, order = found, ()
        if path.attr is not None:
            el.set(path.attr, value)
        else:
            el.text = value

    def _clear_raw(self, path: PropPath) -> None:
        el = self._element(create=False)
        if el is None:
            return
        chain: list[Element] = []
        for step in path.steps:
            found = el.find(step)
            if found is None:
                return
            chain.append(found)
            el = found
        if path.attr is not None:
            if path.attr in el.attrib:
                del el.attrib[path.attr]
        elif chain:
            chain[-1].text = None
            if len(chain[-1]) == 0:
                self._detach(chain[-1])
                chain.pop()
        else:
            el.text = None
        # Prune path elements left empty, innermost first (never this node's own element).
        for step_el in reversed(chain):
            if not _is_empty(step_el):
                break
            self._detach(step_el)

    @staticmethod
    def _detach(el: Element) -> None:
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)


# -- properties ----------------------------------------------------------------------


class XMLProperty(Generic[T]):
    """A typed field mapped to a path; reads ``None`` when absent, ``= None`` removes it."""

    def __init__(self, path: str, parse: Callable[[str], T], fmt: Callable[[T], str]) -> None:
        self.path = PropPath(path)
        self._parse = parse
        self._fmt = fmt

    @overload
    def __get__(self, obj: None, owner: type[XMLNode]) -> Self: ...
    @overload
    def __get__(self, obj: XMLNode, owner: type[XMLNode]) -> T | None: ...
    def __get__(self, obj: XMLNode | None, owner: type[XMLNode]) -> Self | T | None:
        if obj is None:
            return self
        return self._load(obj)

    def __set__(self, obj: XMLNode, value: T | None) -> None:
        self._store(obj, value)

    def _load(self, obj: XMLNode) -> T | None:
        raw = obj._get_raw(self.path)
        return None if raw is None else self._parse(raw.strip())

    def _store(self, obj: XMLNode, value: T | None) -> None:
        obj._set_raw(self.path, None if value is None else self._fmt(value))


def parse_int(text: str) -> int:
    """Decimal, or hexadecimal with ``0x`` (libvirt writes PCI addresses that way)."""
    if text.lower().startswith(("0x", "-0x")):
        return int(text, 16)
    return int(text, 10)


class StrProperty(XMLProperty[str]):
    def __init__(self, path: str) -> None:
        super().__init__(path, str, str)

    def _load(self, obj: XMLNode) -> str | None:
        # Strings are returned as written (no stripping): paths, command lines.
        return obj._get_raw(self.path)


class IntProperty(XMLProperty[int]):
    def __init__(self, path: str) -> None:
        super().__init__(path, parse_int, str)


class BoolProperty(XMLProperty[bool]):
    """``yes``/``no`` (or ``on``/``off`` with ``true="on", false="off"``)."""

    _TRUE = frozenset({"yes", "on", "true", "1"})

    def __init__(self, path: str, true: str = "yes", false: str = "no") -> None:
        super().__init__(path, lambda s: s.lower() in self._TRUE, lambda b: true if b else false)


class FlagProperty:
    """Presence of an empty child element, e.g. ``<readonly/>`` or ``<acpi/>``."""

    def __init__(self, path: str) -> None:
        self.path = PropPath(path)
        if self.path.attr is not None or not self.path.steps:
            raise ValueError(f"a flag path names an element, not {path!r}")

    @overload
    def __get__(self, obj: None, owner: type[XMLNode]) -> Self: ...
    @overload
    def __get__(self, obj: XMLNode, owner: type[XMLNode]) -> bool: ...
    def __get__(self, obj: XMLNode | None, owner: type[XMLNode]) -> Self | bool:
        if obj is None:
            return self
        return obj._find(self.path) is not None

    def __set__(self, obj: XMLNode, value: bool) -> None:
        present = obj._find(self.path) is not None
        if value and not present:
            obj._set_raw(self.path, "")
            el = obj._find(self.path)
            if el is not None:
                el.text = None
        elif not value and present:
            el = obj._find(self.path)
            if el is not None:
                XMLNode._detach(el)


class Child(Generic[N]):
    """A single child element wrapped by ``cls``; lazy: created when first written."""

    def __init__(self, cls: type[N]) -> None:
        self.cls = cls

    @overload
    def __get__(self, obj: None, owner: type[XMLNode]) -> Self: ...
    @overload
    def __get__(self, obj: XMLNode, owner: type[XMLNode]) -> N: ...
    def __get__(self, obj: XMLNode | None, owner: type[XMLNode]) -> Self | N:
        if obj is None:
            return self
        return self.cls._lazy(obj)


class Children(Generic[N]):
    """All direct children with ``cls.TAG``, as a new list of wrappers on each access.

    Add with ``parent.add(cls())``, remove with ``parent.remove(item)``.
    """

    def __init__(self, cls: type[N]) -> None:
        self.cls = cls

    @overload
    def __get__(self, obj: None, owner: type[XMLNode]) -> Self: ...
    @overload
    def __get__(self, obj: XMLNode, owner: type[XMLNode]) -> list[N]: ...
    def __get__(self, obj: XMLNode | None, owner: type[XMLNode]) -> Self | list[N]:
        if obj is None:
            return self
        el = obj._element(create=False)
        if el is None:
            return []
        return [self.cls(child) for child in el.findall(qualify(self.cls.TAG))]
