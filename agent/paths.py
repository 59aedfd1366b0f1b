"""Names of the files under the state directory, shared by the daemon, doctor and provisioning.

Kept free of heavy imports so ``doctor`` and ``provision`` can use them without loading the
pipeline.
"""

from __future__ import annotations

LEDGER_FILE = "consent-ledger.json"
RELEASE_LOG_FILE = "release-log.jsonl"
OUTBOX_FILE = "outbox.sqlite"
MINIMISER_STATE_FILE = "minimiser-state.json"
"""Open windows and last counters of the minimiser, so a restart does not cut them."""
ROTATED_KEYS_FILE = "keys/rotated.json"
"""Public halves of retired device keys (JSON ``{"keys": [{"key_id", "public_key", ...}]}``)."""
WEB_SESSIONS_FILE = "web-sessions.json"
"""The household page's logged-in sessions: only a SHA-256 of each cookie, with its expiry."""
PENDING_REQUESTS_FILE = "pending-requests.json"
"""Support-centre grant requests waiting for the household, until they expire."""
