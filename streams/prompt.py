"""Commands that reach the socket before the sender first yields (a mixin for connections).

redis-py sends each command through ``asyncio.wait_for`` when a socket timeout is set, and
Python 3.11's ``wait_for`` runs the write in a task of its own, which starts only at the
event loop's next turn. The leader sends its next read and yields once before applying a
batch (CPU-bound, milliseconds), so that Redis serves the read meanwhile; with the write
deferred to a task, the read went out only after the batch was applied, and Redis and the
leader took turns instead of working at the same time. Here the command is written to the
transport at once (``StreamWriter.writelines`` sends what the socket accepts, buffers the
rest); only waiting for a full buffer to drain is bounded by the socket timeout, as before.

Commands whose arguments are all bytes, str or int are packed by hiredis (C) rather than
by redis-py's Python packer (the leader's commit carries a few dozen arguments per batch);
anything else (floats, memoryviews, a non-UTF-8 encoder) is packed by redis-py as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import hiredis
import redis.exceptions as rex
from redis.asyncio.connection import AbstractConnection

_PLAIN = frozenset((bytes, str, int))  # exactly these types: bool is refused by redis-py


class PromptSend(AbstractConnection):
    """Writes a command to the transport before the first suspension point."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol, packed by hiredis when its arguments allow."""
        encoder = self.encoder
        if encoder.encoding.lower().replace("-", "") != "utf8" or encoder.encoding_errors != (
            "strict"
        ):
            return super().pack_command(*args)
        if all(type(arg) in _PLAIN for arg in args):
            first = args[0]
            if type(first) is str:
                args = (*first.encode().split(), *args[1:])  # "XGROUP CREATE": two words
            elif type(first) is bytes and b" " in first:
                args = (*first.split(), *args[1:])
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Send a packed command now; wait (bounded by the socket timeout) only to drain."""
        if not self.is_connected or not self.socket_timeout:
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer: Any = self._writer
        try:
            writer.writelines(command)
            async with asyncio.timeout(self.socket_timeout):
                await writer.drain()
        except TimeoutError:  # before OSError, its base class
            await self.disconnect(nowait=True)
            raise rex.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise rex.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A send cut short (cancelled) leaves the stream mid-command: never reuse it.
            await self.disconnect(nowait=True)
            raise
