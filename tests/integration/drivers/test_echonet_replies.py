"""ECHONET Lite reply matching over real UDP on loopback: a reply counts only if it comes from
the node asked, with the request's TID, an ESV that answers the request's and the object asked.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest

from drivers.echonet.client import EchonetClient
from drivers.echonet.codec import Eoj, Esv, Frame, Property, decode, encode

METER = Eoj(class_code=0x0288, instance=0x01)
GENUINE = (632).to_bytes(4, "big", signed=True)
FORGED = (9999).to_bytes(4, "big", signed=True)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hosts() -> Iterator[tuple[str, int, socket.socket, socket.socket]]:
    """Our address, the port, the node asked and a rogue node, on a loopback /24 of its own."""
    prefix = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"
    port = _free_udp_port()
    node, rogue = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    with node, rogue:
        node.bind((f"{prefix}.2", port))
        rogue.bind((f"{prefix}.3", port))
        node.setblocking(False)
        yield f"{prefix}.1", port, node, rogue


def _reply(request: Frame, *, esv: Esv = Esv.GET_RES, seoj: Eoj = METER,
           edt: bytes = GENUINE) -> bytes:
    return encode(Frame(tid=request.tid, seoj=seoj, deoj=request.seoj, esv=esv,
                        properties=(Property(epc=0xE7, edt=edt),)))


async def test_only_the_node_asked_answering_the_get_for_the_object_asked_counts(
        hosts: tuple[str, int, socket.socket, socket.socket]) -> None:
    ours, port, node, rogue = hosts
    node_address = node.getsockname()[0]
    loop = asyncio.get_running_loop()
    async with EchonetClient(interface=ours, port=port, group=None, timeout=30.0,
                             retries=0) as client:
        got = asyncio.create_task(client.get(node_address, METER, [0xE7]))
        request = decode((await loop.sock_recvfrom(node, 1500))[0])
        # Loopback delivers in the order sent, so the forgeries all arrive first.
        rogue.sendto(_reply(request, edt=FORGED), (ours, port))  # another sender
        for forged in (_reply(request, esv=Esv.SET_RES, edt=FORGED),  # not an answer to Get
                       _reply(request, esv=Esv.INF_SNA, edt=FORGED),
                       _reply(request, seoj=Eoj(class_code=0x0288, instance=0x02), edt=FORGED),
                       _reply(request, seoj=Eoj(class_code=0x0EF0, instance=0x01), edt=FORGED)):
            node.sendto(forged, (ours, port))
        node.sendto(_reply(request), (ours, port))
        values = await got
    assert values == {0xE7: GENUINE}
    assert client.stats.mismatched == 5


async def test_a_get_sna_from_the_node_asked_is_its_answer(
        hosts: tuple[str, int, socket.socket, socket.socket]) -> None:
    ours, port, node, _ = hosts
    loop = asyncio.get_running_loop()
    async with EchonetClient(interface=ours, port=port, group=None, timeout=30.0,
                             retries=0) as client:
        got = asyncio.create_task(client.get(node.getsockname()[0], METER, [0xE7]))
        request = decode((await loop.sock_recvfrom(node, 1500))[0])
        node.sendto(_reply(request, esv=Esv.GET_SNA, edt=b""), (ours, port))
        values = await got
    assert values == {0xE7: None}
    assert client.stats.mismatched == 0
