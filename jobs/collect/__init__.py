"""Collection: inventory, platform files, the fetch through Ansible, normalising, host locks, the collector and the start of a run."""
