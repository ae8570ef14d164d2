"""The qkd-bench stack: control loops, key estimation, monitor, scenarios, CLI. Imports only driver contracts."""
