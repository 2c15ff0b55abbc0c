"""The ``devicevault`` command line (``cli/main.py``)."""
