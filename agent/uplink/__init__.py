"""MQTT to the broker: publish the outbox, read v5 acknowledgements."""
