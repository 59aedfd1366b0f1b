"""B-route: the low-voltage smart meter over Wi-SUN through an SK-command module (BP35A1/C2,
RL7023 Stick-D class). ``sk`` speaks the module's line protocol; ``meter`` reads the meter."""
