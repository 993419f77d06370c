"""Operating a setup: `gman-udf doctor` and its checks, `gman-udf systemd`."""
