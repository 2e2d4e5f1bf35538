# -*- test-case-name: tests.documents.test_store -*-
"""
The document API (DESIGN.md "Documents"), one suite run against the memory, SQLite and Redis
back-ends: QEWD's value conversions, M collation, navigation, children ranges, documents in and
out, deletes, increment, locks and the subscript checks.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qewd_twisted.documents import DocumentNode, IDocumentStore, LockTimeout
from tests.documents.backends import MemoryBackend, RedisBackend, SQLiteBackend


def subs(nodes: list) -> list:
    return [n.name for n in nodes]


class DocumentAPIMixin:
    """The behaviour every back-end must show."""

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IDocumentStore, self.backend))
        self.assertEqual(self.backend.kind, self.kind)

    def test_value_round_trip(self) -> None:
        node = self.db.use("person", 1, "name")
        self.assertIsInstance(node, DocumentNode)
        self.assertEqual(node.value, "")
        self.assertFalse(node.exists)
        node.value = "Rob"
        self.assertEqual(node.value, "Rob")
        self.assertEqual(self.db.use("person", "1", "name").value, "Rob")
        self.assertEqual(node.document_name, "person")
        self.assertEqual(node.path, (1, "name"))
        self.assertEqual(node.name, "name")
        self.assertEqual(self.db.use("person").name, "person")

    def test_value_conversions(self) -> None:
        """QEWD's: booleans as "true"/"false", safe-integer strings back as int."""
        node = self.db.use("conv")
        cases = [(True, True), (False, False), (42, 42), ("42", 42), (-7, -7), (1.5, "1.5"),
                 (2.0, 2), ("x", "x"), (None, ""), ("", ""), ("true", True)]
        for i, (stored, read) in enumerate(cases):
            node.use(i).value = stored
            got = node.use(i).value
            self.assertEqual((got, type(got)), (read, type(read)), stored)
        self.assertRaises(TypeError, setattr, node.use("x"), "value", {"a": 1})
        self.assertRaises(TypeError, setattr, node.use("x"), "value", [1])

    def test_unicode(self) -> None:
        node = self.db.use("text")
        for i, s in enumerate(["héllo", "日本語", "emoji 🙂", "Ã©", "a\x00b", "ÿ"]):
            node.use(i).value = s
            self.assertEqual(node.use(i).value, s)
            node.use("k", s).value = i
            self.assertEqual(node.use("k", s).value, i)

    def test_bad_subscripts(self) -> None:
        for bad in [None, {}, [1], True, 1.5, object()]:
            self.assertRaises(TypeError, self.db.use, "d", "x", bad)
            self.assertRaises(TypeError, self.db.use("d").use, "x", bad)
        for bad in ["", "a\x01b", 2**60]:
            self.assertRaises(ValueError, self.db.use, "d", bad)
        self.assertRaises(TypeError, self.db.use, None)
        self.assertRaises(ValueError, self.db.use, "")
        self.assertRaises(ValueError, self.db.use("d").set_document, {"a": {"": 1}})
        self.assertRaises(TypeError, self.db.use("d").set_document, {"a": {"b": object()}})
        self.assertRaises(TypeError, self.db.use("d").set_document, "abc")
        self.assertFalse(self.db.use("d").exists, "nothing written by a refused set_document")

    def test_defined(self) -> None:
        root = self.db.use("def")
        self.assertEqual((root.exists, root.has_value, root.has_children, root.defined),
                         (False, False, False, 0))
        root.use("a").value = 1
        self.assertEqual((root.exists, root.has_value, root.has_children, root.defined),
                         (True, False, True, 10))
        a = root.use("a")
        self.assertEqual((a.exists, a.has_value, a.has_children, a.defined), (True, True, False, 1))
        a.use("b").value = 2
        self.assertEqual(a.defined, 11)
        self.assertTrue(a.has_value and a.has_children)
        root.value = "top"
        self.assertEqual(root.defined, 11)
        self.assertEqual(root.value, "top")

    def test_collation(self) -> None:
        """Integers numerically first, then strings in byte order."""
        node = self.db.use("coll")
        for s in ["b", 10, "a", 2, "B", "10x", 0, "aa", 100, "é"]:
            node.use(s).value = 1
        self.assertEqual(subs(node.children()), [0, 2, 10, 100, "10x", "B", "a", "aa", "b", "é"])
        self.assertEqual(subs(node.children(reverse=True)),
                         ["é", "b", "aa", "a", "B", "10x", 100, 10, 2, 0])
        self.assertEqual(node.count_children(), 10)
        self.assertEqual(list(node), node.children())

    def test_children_ranges(self) -> None:
        node = self.db.use("ranges")
        for s in [1, 2, 3, "apple", "apricot", "banana", "cherry"]:
            node.use(s).value = str(s)
        self.assertEqual(subs(node.children(start=2)),
                         [2, 3, "apple", "apricot", "banana", "cherry"])
        self.assertEqual(subs(node.children(start=2, stop="banana")), [2, 3, "apple", "apricot"])
        self.assertEqual(subs(node.children(start="apq")), ["apricot", "banana", "cherry"])
        self.assertEqual(subs(node.children(stop=1)), [])
        self.assertEqual(subs(node.children(prefix="ap")), ["apple", "apricot"])
        self.assertEqual(subs(node.children(prefix="ap", reverse=True)), ["apricot", "apple"])
        self.assertEqual(subs(node.children(prefix="zz")), [])
        self.assertEqual(subs(node.children(prefix="ap", start="apq")), ["apricot"])
        self.assertEqual(subs(node.children(reverse=True, start="banana", stop=2)),
                         ["banana", "apricot", "apple", 3])
        self.assertEqual(subs(node.children(reverse=True, start="b")), ["apricot", "apple", 3, 2, 1])
        self.assertEqual(subs(self.db.use("nothing").children()), [])

    def test_navigation(self) -> None:
        node = self.db.use("nav")
        for s in [5, 1, "x", "m"]:
            node.use(s, "leaf").value = s
        self.assertEqual(node.first_child, node.use(1))
        self.assertEqual(node.last_child, node.use("x"))
        self.assertEqual(node.use(1).next_sibling, node.use(5))
        self.assertEqual(node.use(5).next_sibling, node.use("m"))
        self.assertIsNone(node.use("x").next_sibling)
        self.assertIsNone(node.use(1).previous_sibling)
        self.assertEqual(node.use("m").previous_sibling, node.use(5))
        # a node that does not exist still has neighbours (M's $ORDER)
        self.assertEqual(node.use(3).next_sibling, node.use(5))
        self.assertEqual(node.use(3).previous_sibling, node.use(1))
        self.assertEqual(node.use("n").previous_sibling, node.use("m"))
        self.assertIsNone(node.use(5, "leaf").first_child)
        self.assertIsNone(node.next_sibling)
        self.assertEqual(node.use(5, "leaf").parent, node.use(5))
        self.assertIsNone(node.parent)
        self.assertIsNone(self.db.use("empty").first_child)

    def test_delete(self) -> None:
        doc = self.db.use("del")
        doc.set_document({"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4})
        doc.use("a", "b").delete()
        self.assertEqual(doc.get_document(), {"a": {"e": 3}, "f": 4})
        doc.use("a", "e").delete()
        self.assertFalse(doc.use("a").exists, "an ancestor left with nothing goes too")
        self.assertEqual(subs(doc.children()), ["f"])
        doc.use("f").value = "keep"
        doc.use("f", "x").value = 1
        doc.use("f", "x").delete()
        self.assertEqual((doc.use("f").defined, doc.use("f").value), (1, "keep"))
        doc.use("nothing", "here").delete()
        doc.delete()
        self.assertFalse(doc.exists)
        self.assertEqual(doc.get_document(), {})
        self.assertNotIn("del", self.db.names())

    def test_delete_is_exact(self) -> None:
        """Deleting a node leaves siblings whose subscripts share its prefix, and other
        documents whose names end like it."""
        self.db.use("ab").value = "other document"
        self.db.use("b", "x").value = 1
        self.db.use("b", "x1").value = 2
        self.db.use("b", "x*").value = 3
        self.db.use("b", "x").delete()
        self.assertEqual(self.db.use("b").get_document(), {"x*": 3, "x1": 2})
        self.db.use("b").delete()
        self.assertEqual(self.db.use("ab").value, "other document")

    def test_increment(self) -> None:
        node = self.db.use("counter")
        self.assertEqual(node.increment(), 1)
        self.assertEqual(node.increment(), 2)
        self.assertEqual(node.increment(10), 12)
        self.assertEqual(node.increment(-13), -1)
        self.assertEqual(node.value, -1)
        other = self.db.use("counter2", "a")
        other.value = "12abc"
        self.assertEqual(other.increment(), 13)
        other.value = "abc"
        self.assertEqual(other.increment(), 1)
        self.assertRaises(TypeError, node.increment, 1.5)
        self.assertRaises(TypeError, node.increment, True)
        self.assertEqual(self.db.use("counter2").defined, 10)

    def test_documents(self) -> None:
        doc = self.db.use("doc", "x")
        doc.set_document({"name": "Rob", "age": 60, "ok": True, "none": None,
                          "tags": ["a", "b", {"c": 1}], "nested": {"deep": {"er": 1.5}},
                          "empty": {}, "emptylist": []})
        self.assertEqual(doc.get_document(), {
            "age": 60, "name": "Rob", "nested": {"deep": {"er": "1.5"}}, "none": "", "ok": True,
            "tags": {"0": "a", "1": "b", "2": {"c": 1}}})
        self.assertEqual(doc.get_document(True)["tags"], ["a", "b", {"c": 1}])
        # merges
        doc.set_document({"name": "Bob", "tags": ["z"]})
        self.assertEqual(doc.use("name").value, "Bob")
        self.assertEqual(doc.get_document(use_arrays=True)["tags"], ["z", "b", {"c": 1}])
        # a top-level list
        lst = self.db.use("list")
        lst.set_document([1, [2, 3], {"a": [4]}])
        self.assertEqual(lst.get_document(True), [1, [2, 3], {"a": [4]}])
        self.assertEqual(lst.get_document(), {"0": 1, "1": {"0": 2, "1": 3}, "2": {"a": {"0": 4}}})
        # not an array: a gap, or not starting at 0
        gap = self.db.use("gap")
        gap.set_document({"0": "a", "2": "b"})
        self.assertEqual(gap.get_document(True), {"0": "a", "2": "b"})
        self.assertEqual(self.db.use("missing").get_document(True), {})

    def test_value_and_children_in_documents(self) -> None:
        """A node with both shows its children in get_document, as QEWD does."""
        doc = self.db.use("both")
        doc.use("a").value = "v"
        doc.use("a", "b").value = 1
        self.assertEqual(doc.get_document(), {"a": {"b": 1}})
        self.assertEqual(doc.use("a").value, "v")

    def test_leaves(self) -> None:
        doc = self.db.use("leaves")
        doc.set_document({"b": 1, "a": {"x": 2, "y": {"z": 3}}, "c": [4, 5]})
        doc.use("a").value = "va"
        self.assertEqual([n.path for n in doc.leaves()],
                         [("a",), ("a", "x"), ("a", "y", "z"), ("b",), ("c", 0), ("c", 1)])
        self.assertEqual([n.value for n in doc.use("a").leaves()], ["va", 2, 3])

    def test_names(self) -> None:
        self.db.use("zeta").value = 1
        self.db.use("alpha", "x").value = 1
        self.assertEqual([n for n in self.db.names() if n in ("zeta", "alpha")], ["alpha", "zeta"])

    def test_lock(self) -> None:
        node = self.db.use("locks", "a")
        with node.lock(1) as held:
            self.assertTrue(held.held)
            self.assertRaises(LockTimeout, node.lock, 0)
            other = self.db.use("locks", "b").lock(0)  # another name is another lock
            other.release()
        self.assertFalse(held.held)
        again = node.lock(0)
        again.release()
        again.release()  # releasing twice is harmless
        self.assertRaises(ValueError, node.lock, -1)


class MemoryStoreTests(DocumentAPIMixin, MemoryBackend, SynchronousTestCase):
    pass


class SQLiteStoreTests(DocumentAPIMixin, SQLiteBackend, SynchronousTestCase):
    pass


class RedisStoreTests(DocumentAPIMixin, RedisBackend, SynchronousTestCase):
    pass


class NegativeIntegerMixin:
    def test_negative_integers(self) -> None:
        """M collation of negative integers (Redis keeps QEWD's layout: see compatibility.md)."""
        node = self.db.use("neg")
        for s in [3, -1, -20, 0, "a"]:
            node.use(s).value = 1
        self.assertEqual(subs(node.children()), [-20, -1, 0, 3, "a"])


class MemoryNegativeTests(NegativeIntegerMixin, MemoryBackend, SynchronousTestCase):
    pass


class SQLiteNegativeTests(NegativeIntegerMixin, SQLiteBackend, SynchronousTestCase):
    pass
