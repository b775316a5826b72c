"""A receiving party's mailbox: messages demultiplexed by (sender, tag).

Transports deliver into a ``Mailbox`` (from the sender's thread in memory, from
a reader thread over TLS); the protocol thread takes messages out by
(sender, tag). The mailbox enforces the plan: on each link tags arrive in
increasing order and each at most once, so a replayed, stale or unexpected
tag is refused with :class:`BadFrame`. Pending bytes are bounded, so a peer
cannot exhaust memory. An abort wakes every waiter with
:class:`ProtocolAbort`; a wait longer than the timeout raises
:class:`PeerUnavailable`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concilium.errors import BadFrame, PeerUnavailable, abort_error

__all__ = ["Mailbox", "Message"]


@dataclass(frozen=True)
class Message:
    """A delivered array with its sender, tag and the sender's round stamp."""

    sender: int
    tag: int
    stamp: int
    array: npt.NDArray[np.generic]


class Mailbox:
    """Thread-safe (sender, tag) -> message store for one receiving party."""

    def __init__(self, *, max_pending_bytes: int = 8 << 30) -> None:
        self._condition = threading.Condition()
        self._pending: dict[tuple[int, int], Message] = {}
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._last_tag: dict[int, int] = {}
        self._abort_reason: str | None = None
        self._closed: dict[int, str] = {}

    @property
    def aborted(self) -> str | None:
        """The abort reason, or None while the run is alive."""
        return self._abort_reason

    def deliver(self, message: Message) -> None:
        """Store a message; a duplicate, stale or over-budget one is refused."""
        with self._condition:
            if self._abort_reason is not None:
                return
            key = (message.sender, message.tag)
            last = self._last_tag.get(message.sender, -1)
            if message.tag <= last or key in self._pending:
                raise BadFrame(
                    f"party {message.sender} sent tag {message.tag} again or out of order "
                    f"(last tag on this link: {last}); refusing a replayed frame"
                )
            if self._pending_bytes + message.array.nbytes > self._max_pending_bytes:
                raise BadFrame(
                    f"party {message.sender} has more than {self._max_pending_bytes} bytes "
                    "waiting to be read; refusing more"
                )
            self._last_tag[message.sender] = message.tag
            self._pending[key] = message
            self._pending_bytes += message.array.nbytes
            self._condition.notify_all()

    def take(self, sender: int, tag: int, timeout: float) -> Message:
        """Wait for (sender, tag) and remove it from the mailbox."""
        deadline = time.monotonic() + timeout
        key = (sender, tag)
        with self._condition:
            while True:
                if self._abort_reason is not None:
                    raise abort_error(self._abort_reason)
                message = self._pending.pop(key, None)
                if message is not None:
                    self._pending_bytes -= message.array.nbytes
                    return message
                self._check_plan(sender, tag)
                if sender in self._closed:
                    raise PeerUnavailable(self._closed[sender])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerUnavailable(
                        f"party {sender} sent nothing for tag {tag} within {timeout:g} s; "
                        "it may have crashed, stalled or lost its connection. The run is "
                        "aborted and nothing further is revealed"
                    )
                self._condition.wait(remaining)

    def _check_plan(self, sender: int, tag: int) -> None:
        """Receivers ask for tags in increasing order on each link, and senders send them
        in increasing order: a later tag from ``sender`` means ``tag`` will never come,
        and an unread earlier one will never be asked for. Either way the plans differ."""
        last = self._last_tag.get(sender, -1)
        stale = [t for (s, t) in self._pending if s == sender and t < tag]
        if last > tag or stale:
            raise BadFrame(
                f"expected tag {tag} from party {sender} but it sent tag "
                f"{stale[0] if stale else last}: the parties are not running the same plan"
            )

    def closed_reason(self, sender: int) -> str | None:
        """Why ``sender`` will send nothing more, or None while it may."""
        with self._condition:
            return self._closed.get(sender)

    def close_peer(self, sender: int, reason: str) -> None:
        """``sender`` will send nothing more: waits for it raise PeerUnavailable(reason)."""
        with self._condition:
            self._closed.setdefault(sender, reason)
            self._condition.notify_all()

    def abort(self, reason: str) -> None:
        """Wake every waiter with ProtocolAbort(reason); the first reason wins."""
        with self._condition:
            if self._abort_reason is None:
                self._abort_reason = reason
            self._pending.clear()
            self._pending_bytes = 0
            self._condition.notify_all()
