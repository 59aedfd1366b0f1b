"""SunSpec: discovery, decoding with the SunSpec Alliance's model definitions, and the mapping
of the models that matter to canonical points.

Nothing outside ``drivers`` needs this package: it reduces a device to
:class:`drivers.registers.RegisterPoint` tuples and :class:`drivers.models.DeviceIdentity`.
"""
