# -*- test-case-name: tests.test_wire -*-
"""
qewd_twisted.wire: the Engine.IO 3 / socket.io 2 codec (docs/protocol.md §1.1, §1.2).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.transports import wire


def _general(text: str):
    """The general socket.io path, without the shortcut for ``42["``."""
    try:
        return wire._decode_socketio(text[1:])
    except wire.WireError as e:
        return ("error", str(e))


def _decoded(text: str):
    try:
        return wire.decode(text)
    except wire.WireError as e:
        return ("error", str(e))


class EventShortcutTests(SynchronousTestCase):
    """``42["...`` frames take a shortcut; it must give what the general path gives."""

    def test_qewd_frame(self) -> None:
        packet = wire.decode('42["ewdjs",{"type":"echo","token":"t"}]')
        self.assertEqual((packet.kind, packet.name, packet.args, packet.namespace, packet.ack_id),
                         ("event", "ewdjs", [{"type": "echo", "token": "t"}], "/", None))

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(
        st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none(),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
                 max_size=3).map(lambda v: '42["' + json.dumps(v)[1:]),
        st.text(max_size=20).map(lambda t: '42["' + t),
        st.sampled_from(['42["ewdjs"]', '42["ewdjs",1] ', '42["ewdjs",1]x', '42["a"', '42["',
                         '42["ewdjs",NaN]', '42["\\ud800",{}]']),
    ))
    def test_same_as_general_path(self, text: str) -> None:
        self.assertEqual(_decoded(text), _general(text))

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(
        st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none(),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
                 max_size=3).map(lambda v: '42["ewdjs",' + json.dumps(v)[1:]),
        st.text(max_size=20).map(lambda t: '42["ewdjs",' + t),
        st.text(max_size=20).map(lambda t: '42' + t),
        st.sampled_from(['42["ewdjs"]', '42["ewdjs",1] ', '42["ewdjs",1]x', '42["ewdjs",',
                         '42["ewdjs",NaN]', '42["ewdjs",{}', '42["ewdjs" ,{}]', '2probe']),
    ))
    def test_qewd_event_is_decode_args(self, text: str) -> None:
        """``qewd_event``: None for anything but ``42["ewdjs",...``; for that, what ``decode``
        gives as the event's arguments, or the same WireError."""
        try:
            args = wire.qewd_event(text)
        except wire.WireError as e:
            self.assertEqual(("error", str(e)), _decoded(text))
            return
        if args is None:
            self.assertFalse(text.startswith('42["ewdjs",'))
        else:
            packet = wire.decode(text)
            self.assertEqual((packet.kind, packet.name, packet.namespace, packet.args),
                             ("event", "ewdjs", "/", args))
            self.assertTrue(args)  # at least one argument: the message

    def test_other_frames_unchanged(self) -> None:
        self.assertEqual(wire.decode('42/chat,["m",1]').namespace, "/chat")
        self.assertEqual(wire.decode('4212["m",1]').ack_id, 12)
        self.assertEqual(wire.decode("2probe").data, "probe")
        self.assertRaises(wire.WireError, wire.decode, "42[1]")
