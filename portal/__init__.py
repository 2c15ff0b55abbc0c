"""DeviceVault's Streamlit portal: browse devices and versions, diff, search, start and follow backups.

``portal/app.py`` is the Streamlit entry point (``devicevault portal``); ``portal/views/`` holds one file
per page; ``portal/queries.py`` (index reads) and ``portal/content.py`` (reading, caching, diffing and
searching configurations) have no Streamlit in them; ``portal/users.py`` is the users file. See README.md.
"""
