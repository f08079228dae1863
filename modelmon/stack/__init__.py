"""The stack's one topology, and `modelmon stack up`: that topology from local processes (no Docker).

topology.py describes the services once (arguments, ports, mounts, start order, health checks) and
renders them for a target: docker-compose.yml, or this machine. plan.py is the native rendering as
a process list, ports.py picks the ports, workdir.py writes the configs, secrets and data folders,
supervisor.py starts, watches and stops the processes, banner.py says where each one answers;
compose_secrets.py writes compose's *_env secrets. cli.py is the command module.
"""
