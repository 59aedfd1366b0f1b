"""Simulated devices for the demo and the tests: a Japanese home's day and SunSpec servers for it.

Nothing in the daemon's run-time import path imports this package: it pulls in
``pymodbus.server`` (and with it aiohttp) and ``sunspec2``'s device API, which only the demo,
the tests and the benchmarks need.

- :mod:`drivers.sim.curves`: pure, seeded day curves and an energy integrator.
- :mod:`drivers.sim.sunspec_image`: SunSpec register images built from the SunSpec model
  definitions shipped with ``pysunspec2``.
- :mod:`drivers.sim.server`: pymodbus servers (TCP, or RTU framing over TCP) for an inverter,
  a battery and a grid meter, with run-time fault injection.
"""
