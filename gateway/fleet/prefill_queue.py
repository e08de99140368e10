"""The gateway's model of one backend's prefill queue, in seconds of work still ahead."""

from __future__ import annotations

from collections import OrderedDict

TYPICAL_WEIGHT = 0.05


class PrefillQueue:
    """FIFO of prefills the gateway sent to a backend whose first byte has not come back yet.

    Engines prefill roughly in arrival order, so when request r starts answering, every
    request sent before it has finished its prefill too. The head's work is taken as being
    done since it started (the previous first byte, or its own dispatch on an idle backend),
    which makes the estimate fall as time passes instead of jumping at each first byte.
    """

    __slots__ = ("_entries", "_head_started", "_next_ticket", "_total_s", "typical_s")

    def __init__(self) -> None:
        self._entries: OrderedDict[int, float] = OrderedDict()
        self._total_s = 0.0
        self._head_started = 0.0
        self._next_ticket = 0
        # Moving average of the work pushed: what an unseen waiting request is guessed to cost.
        self.typical_s = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, work_s: float, now: float) -> int:
        """Queue `work_s` seconds of prefill; returns the ticket to settle it with."""
        if not self._entries:
            self._head_started = now
        ticket = self._next_ticket
        self._next_ticket += 1
        self._entries[ticket] = work_s
        self._total_s += work_s
        self.typical_s += TYPICAL_WEIGHT * (work_s - self.typical_s)
        return ticket

    def head_since(self, ticket: int) -> float | None:
        """When `ticket`'s prefill began, if it is at the head (else None).

        That is the previous request's first byte, or its own dispatch on an idle backend.
        """
        if self._entries and next(iter(self._entries)) == ticket:
            return self._head_started
        return None

    def done(self, ticket: int, now: float) -> None:
        """The ticket's first byte arrived: it and everything queued before it are done."""
        if ticket not in self._entries:
            return
        while self._entries:
            first, work = self._entries.popitem(last=False)
            self._total_s -= work
            if first == ticket:
                break
        self._settle(now)

    def cancel(self, ticket: int, now: float) -> None:
        """The attempt failed before answering: its work will not be done."""
        work = self._entries.pop(ticket, None)
        if work is None:
            return
        was_head = ticket < next(iter(self._entries), ticket + 1)
        self._total_s -= work
        if was_head:
            self._settle(now)

    def _settle(self, now: float) -> None:
        self._head_started = now
        if not self._entries:
            self._total_s = 0.0  # no drift from float sums

    @property
    def queued_s(self) -> float:
        """Seconds of prefill work queued, none of it counted as done."""
        return self._total_s

    def wait_s(self, now: float) -> float:
        """Seconds of prefill a request sent now would wait behind."""
        if not self._entries:
            return 0.0
        head = next(iter(self._entries.values()))
        done = min(max(0.0, now - self._head_started), head)
        return max(0.0, self._total_s - done)
