"""What crosses the network, shared by gateway and cloud tools: keys, envelope, topics, signed
commands."""
