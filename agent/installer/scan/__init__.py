"""``hems-agent scan``: find and read Modbus and ECHONET Lite devices."""
