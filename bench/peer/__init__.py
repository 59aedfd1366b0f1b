"""Helpers for bench/bench_peer.py: the measuring harness, our read path as a subject process,
and the ThingsBoard IoT Gateway's configuration."""
