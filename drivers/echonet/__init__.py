"""ECHONET Lite over UDP/IPv4 (home LAN) for PV, storage batteries and smart meters.

``codec`` (pure frame encode/decode), ``tables`` (EPC tables as data in ``classes/*.json``),
``meter`` (smart-meter value decoding shared with the B-route driver), ``client`` (asyncio UDP),
``discovery`` (nodes, objects, property maps, identity) and ``device`` (the poller).
Read-only: nothing here sends Set requests.
"""
