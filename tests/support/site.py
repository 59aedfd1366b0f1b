"""A gateway's files for tests: keys, secrets and an agent.toml pointing at test servers.

Keys are generated per test run; nothing secret is stored in the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.wire.keys import (
    KEM_X25519,
    RecipientPrivateKey,
    device_public_pem,
    ensure_device_key,
    generate_recipient_key,
    recipient_private_pem,
    recipient_public_pem,
    write_private_file,
)
from tests.support.mosquitto import RECEIVER_USER, Mosquitto

RECIPIENTS = ("company", "support_centre", "installer")


@dataclass(kw_only=True)
class SiteFiles:
    site_id: str
    directory: Path
    config: Path
    device_key: ed25519.Ed25519PrivateKey
    recipient_keys: dict[str, RecipientPrivateKey]
    recipient_files: dict[str, Path] = field(default_factory=dict)
    device_registry: Path = Path()
    receiver_password_file: Path = Path()

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"


def broker_users(site_id: str) -> dict[str, str]:
    return {site_id: f"pw-{site_id}", RECEIVER_USER: "pw-receiver"}


def make_site(directory: Path, broker: Mosquitto, *, site_id: str,
              devices: list[dict[str, object]], recipients: tuple[str, ...] = RECIPIENTS,
              extra: str = "") -> SiteFiles:
    """Write keys, secrets, the device registry and agent.toml into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    device_key = ensure_device_key(directory / "device.key")
    password = directory / "broker.pass"
    write_private_file(password, broker_users(site_id)[site_id].encode())
    receiver_password = directory / "receiver.pass"
    write_private_file(receiver_password, broker_users(site_id)[RECEIVER_USER].encode())
    keys: dict[str, RecipientPrivateKey] = {}
    files: dict[str, Path] = {}
    for name in recipients:
        key = generate_recipient_key(KEM_X25519)
        keys[name] = key
        (directory / f"{name}.pub").write_bytes(recipient_public_pem(key.public))
        files[name] = directory / f"{name}.key"
        write_private_file(files[name], recipient_private_pem(key))
    registry = directory / "devices.json"
    registry.write_text(json.dumps(
        {site_id: device_public_pem(device_key.public_key()).decode()}), encoding="utf-8")
    config = directory / "agent.toml"
    config.write_text(_toml(site_id, broker, directory, devices, recipients) + extra,
                      encoding="utf-8")
    return SiteFiles(site_id=site_id, directory=directory, config=config, device_key=device_key,
                     recipient_keys=keys, recipient_files=files, device_registry=registry,
                     receiver_password_file=receiver_password)


def _toml(site_id: str, broker: Mosquitto, directory: Path, devices: list[dict[str, object]],
          recipients: tuple[str, ...]) -> str:
    lines = [
        f'site_id = "{site_id}"', 'timezone = "Asia/Tokyo"', f'state_dir = "{directory}/state"',
        f'device_key_file = "{directory}/device.key"', "metrics_listen = \"\"", "",
        "[clock]", 'sync_check = "none"', "",
        "[broker]", f'url = "mqtts://127.0.0.1:{broker.port}"', f'ca_file = "{broker.ca}"',
        f'username = "{site_id}"', f'password_file = "{directory}/broker.pass"', "",
    ]
    for name in recipients:
        lines += ["[[recipients]]", f'id = "{name}"', f'key_file = "{directory}/{name}.pub"', ""]
    for device in devices:
        lines.append("[[devices]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in device.items()]
        lines.append("")
    return "\n".join(lines) + "\n"
