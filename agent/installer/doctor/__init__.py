"""``hems-agent doctor``: check a provisioned gateway, explain each fix."""
