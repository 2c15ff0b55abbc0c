"""Compliance rules: lines a device's configuration must or must not hold, checked on every new version and on
demand. ``rules.py``: the rules file and what a rule says of a configuration; ``checker.py``: checking devices,
the results in the index (``storage.index.compliance``), the ``compliance:changed`` events and the
``versions:created`` subscriber."""
