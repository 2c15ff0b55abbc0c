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

from portal import ui  # noqa: E402

st.set_page_config(page_title="DeviceVault", page_icon=":material/inventory_2:", layout="wide")

user = ui.current_user()
if user is None:
    st.navigation([st.Page(ui.login_page, title="Log in", url_path="login", default=True)], position="hidden").run()
    st.stop()

VIEWS = Path(__file__).resolve().parent / "views"
pages = [
    st.Page(VIEWS / "dashboard.py", title="Dashboard", icon=":material/dashboard:", url_path="dashboard", default=True),
    st.Page(VIEWS / "devices.py", title="Devices", icon=":material/lan:", url_path="devices"),
    st.Page(VIEWS / "device.py", title="Device", icon=":material/router:", url_path="device"),
    st.Page(VIEWS / "search.py", title="Search", icon=":material/search:", url_path="search"),
    st.Page(VIEWS / "runs.py", title="Runs", icon=":material/play_circle:", url_path="runs"),
    st.Page(VIEWS / "health.py", title="Health", icon=":material/monitor_heart:", url_path="health"),
]
if user.is_admin:
    pages.append(st.Page(VIEWS / "users.py", title="Users", icon=":material/group:", url_path="users"))
ui.sidebar(user)
st.navigation(pages).run()
