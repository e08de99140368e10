"""A transport and a pool stand-in that record what a connection does to them."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.proxy.h1conn import H1Connection


class FakeTransport(asyncio.Transport):
    """Records writes, pauses and closes instead of touching a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.closed = False
        self.unsent = 0

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class FakeOwner:
    """Counts checkins and losses."""

    def __init__(self) -> None:
        self.checked_in: list[H1Connection] = []
        self.lost_conns: list[H1Connection] = []

    def checkin(self, conn: H1Connection) -> None:
        self.checked_in.append(conn)

    def lost(self, conn: H1Connection) -> None:
        self.lost_conns.append(conn)


def connected(
    owner: Any, *, high_water: int = 1024, read_timeout_s: float = 10.0
) -> tuple[H1Connection, FakeTransport]:
    """A connection on the running loop, attached to a fake transport."""
    conn = H1Connection(
        asyncio.get_running_loop(), owner, read_timeout_s=read_timeout_s, high_water=high_water
    )
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport
