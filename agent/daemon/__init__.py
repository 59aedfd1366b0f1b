"""The running service: composition root, task group, signed remote commands, ``hems-agent
run``."""
