"""DeviceVault portal: ``streamlit run portal/app.py`` (or ``devicevault portal``).

Nothing but the login form is registered until someone logs in; then the pages in ``portal/views/`` are,
each of which checks the login again (``portal.ui.run_page``). See ``portal/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run portal/app.py` puts only portal/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from portal import links, ui  # noqa: E402

st.set_page_config(page_title="DeviceVault", page_icon=":material/inventory_2:", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
#: (file, title, icon, url path); every page is registered for every user (a page checks the role itself)
PAGES = [
    ("dashboard.py", "Dashboard", ":material/dashboard:", "dashboard"),
    ("devices.py", "Devices", ":material/lan:", "devices"),
    ("device.py", "Device", ":material/router:", "device"),
    ("search.py", "Search", ":material/search:", "search"),
    ("compliance.py", "Compliance", ":material/rule:", "compliance"),
    ("runs.py", "Runs", ":material/play_circle:", "runs"),
    ("snapshot.py", "Export", ":material/archive:", "export"),
    ("health.py", "Health", ":material/monitor_heart:", "health"),
    ("users.py", "Users", ":material/group:", "users"),
]

user = ui.current_user()
if user is None:
    # every page's address shows the login form: a link (/device?device=...&a=3&b=4) keeps its page and
    # query parameters through the login, then the same run shows the page itself
    st.navigation([st.Page(ui.login_page, title="Log in", url_path=url, default=i == 0)
                   for i, (_, _, _, url) in enumerate(PAGES)], position="hidden").run()
    st.stop()

pages = [st.Page(VIEWS / file, title=title, icon=icon, url_path=url, default=i == 0)
         for i, (file, title, icon, url) in enumerate(PAGES)]
current = st.navigation(pages, position="hidden")
links.arrive(current.url_path)  # a URL is taken as a link only on arriving at its page (portal.links)
ui.sidebar(user)
with st.sidebar:  # every page is registered (a link to a page of another role says so on that page);
    for page in pages:  # the menu lists those of the user's role
        if page.url_path != "users" or user.is_admin:
            st.page_link(page)
current.run()
