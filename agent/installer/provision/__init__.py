"""``hems-agent provision``: keys, broker, devices, consent."""
