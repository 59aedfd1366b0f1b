"""``hems-agent demo`` only: agent, broker, page and cloud with simulated devices."""
