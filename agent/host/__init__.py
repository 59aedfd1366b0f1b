"""What the gateway host gives and how healthy it is: trusted clock, sd_notify, metrics, restart
with backoff, health checks."""
