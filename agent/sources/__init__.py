"""Device pollers feeding a Reading sink."""
