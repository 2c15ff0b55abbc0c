"""DeviceVault jobs: collection (Ansible through ansible-runner), storage jobs, result streams and the index consumer.

Job entry points for RQ live in :mod:`jobs.tasks`; everything else is plain functions that take the Redis
connection and the settings as arguments.
"""
