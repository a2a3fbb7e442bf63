"""The socket ``python -m app`` serves on: Nagle off on every accepted connection.

With Nagle on, an answer on a kept-alive connection (every browser, SDK and load test) waited
~40 ms for the client's delayed ACK between its headers and its body.
"""

from __future__ import annotations

import asyncio
import socket

from app.__main__ import _listen


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=_listen("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) == 1
