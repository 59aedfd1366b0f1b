"""The demo's ECHONET Lite home: emulated PV, battery and smart meter on loopback.

:func:`start_echonet_site` starts a "gateway" node (PV 0x02791F, battery 0x027D02: real
gateways use such instance codes) and a smart-meter node (0x028801) on a loopback /24 of
their own and a free UDP port, and returns them with the configuration snippet that reads them
(``[echonet]`` plus three ``[[echonet_devices]]``). Given a :class:`drivers.sim.server.SimHome`,
the emulated values follow that home's curves, as the Modbus simulators do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.host.supervisor import cancel_and_wait
from drivers.echonet.codec import Eoj
from drivers.sim import echonet_emulator as emu

if TYPE_CHECKING:
    from drivers.sim.curves import Snapshot
    from drivers.sim.server import SimHome

PV = Eoj(class_code=0x0279, instance=0x1F)
BATTERY = Eoj(class_code=0x027D, instance=0x02)
METER = Eoj(class_code=0x0288, instance=0x01)
UNIT_WH = 100  # the emulated meter counts in 0.1 kWh (0xE1 = 0x01)
_STOP_GRACE = 5.0  # seconds the value updater has to stop when the site closes


@dataclass(kw_only=True)
class EchonetSite:
    """The running emulator: ``gateway`` (PV + battery) and ``meter`` nodes."""

    interface: str
    port: int
    gateway: emu.EchonetNode
    meter: emu.EchonetNode
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def toml(self, *, names: tuple[str, str, str] = ("echonet_pv", "echonet_battery",
                                                     "echonet_meter"),
             poll_interval: float = 2.0, slow_interval: float = 10.0) -> str:
        """The configuration that reads this site; the PV is found by discovery."""
        pv, battery, meter = names
        lines = ["[echonet]", f'interface = "{self.interface}"', f"port = {self.port}",
                 "discovery = true", "discovery_wait = 0.5", "timeout = 1.0", "retries = 1", ""]
        for name, eoj, address in ((pv, "0279", None),
                                   (battery, "027D02", self.gateway.address),
                                   (meter, "0288", self.meter.address)):
            lines += ["[[echonet_devices]]", f'name = "{name}"', f'eoj = "{eoj}"']
            if address is not None:
                lines.append(f'address = "{address}"')
            lines += [f"poll_interval = {poll_interval}", f"slow_interval = {slow_interval}",
                      ""]
        return "\n".join(lines)

    async def aclose(self) -> None:
        """Stop the nodes (and the value updater)."""
        await self._stack.aclose()


def _free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


async def start_echonet_site(*, home: SimHome | None = None, prefix: str | None = None,
                             port: int | None = None,
                             update_every: float = 1.0) -> tuple[EchonetSite, str]:
    """Start the emulated nodes; returns the site (``await site.aclose()`` to stop) and the
    configuration snippet to append to agent.toml. ``prefix`` is a loopback /24 such as
    ``127.36.7`` (random by default, so parallel runs do not meet)."""
    prefix = prefix or f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"
    port = port or _free_udp_port("127.0.0.1")
    interface = f"{prefix}.1"
    gateway = emu.EchonetNode(f"{prefix}.2", [emu.pv(PV.instance), emu.battery(BATTERY.instance)],
                              port=port, interface=interface)
    meter = emu.EchonetNode(f"{prefix}.3", [emu.smart_meter(METER.instance, coefficient=1)],
                            port=port, interface=interface)
    site = EchonetSite(interface=interface, port=port, gateway=gateway, meter=meter)
    try:
        await site._stack.enter_async_context(gateway)
        await site._stack.enter_async_context(meter)
        if home is not None:
            task = asyncio.get_running_loop().create_task(_follow(site, home, update_every))
            site._stack.push_async_callback(cancel_and_wait, [task], grace=_STOP_GRACE)
    except BaseException:
        await site.aclose()
        raise
    return site, site.toml()


async def _follow(site: EchonetSite, home: SimHome, every: float) -> None:
    while True:
        apply_snapshot(site, home.snapshot())
        await asyncio.sleep(every)


def apply_snapshot(site: EchonetSite, s: Snapshot) -> None:
    """Set the emulated objects' values from a simulated home's snapshot."""
    pv = site.gateway.object(PV).values
    pv[0xE0] = int(max(0.0, s.pv_w)).to_bytes(2, "big")
    pv[0xE1] = int(s.pv_wh).to_bytes(4, "big")
    pv[0xE3] = int(s.grid_export_wh).to_bytes(4, "big")
    battery = site.gateway.object(BATTERY).values
    charging = -int(s.battery_w)  # the simulator's + is discharging; ECHONET's + is charging
    battery[0xD3] = charging.to_bytes(4, "big", signed=True)
    battery[0xE4] = bytes([round(s.soc_pct)])
    battery[0xE2] = int(s.soc_pct * 98).to_bytes(4, "big")  # of a 9.8 kWh battery
    battery[0xA8] = int(s.battery_charged_wh).to_bytes(4, "big")
    battery[0xA9] = int(s.battery_discharged_wh).to_bytes(4, "big")
    battery[0xCF] = b"\x42" if charging > 0 else b"\x43" if charging < 0 else b"\x44"
    meter = site.meter.object(METER).values
    meter[0xE7] = int(s.grid_w).to_bytes(4, "big", signed=True)
    meter[0xE0] = int(s.grid_import_wh // UNIT_WH).to_bytes(4, "big")
    meter[0xE3] = int(s.grid_export_wh // UNIT_WH).to_bytes(4, "big")
