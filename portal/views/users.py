"""Users (admins only): who may log in to the portal, with which role; add, change role, reset password,
remove. The same file ``devicevault users add|list|remove`` manages."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from portal import ui
from portal.users import ROLES


def render(user) -> None:
    st.title("Users")
    users = ui.users_file()
    rows = [{"user": u.name, "role": u.role} for u in users.users()]
    st.dataframe(pd.DataFrame(rows, columns=["user", "role"]), hide_index=True, width="stretch", key="users_table")
    st.caption(f"Users file: {users.path} (bcrypt hashes; passwords are never stored or shown).")
    add, change = st.columns(2)
    with add, st.form("users_add_form", clear_on_submit=True):
        st.subheader("Add a user")
        name = st.text_input("User name", key="users_add_name")
        role = st.selectbox("Role", ROLES, key="users_add_role")
        password = st.text_input("Password (8 characters or more)", type="password", key="users_add_password")
        again = st.text_input("Password again", type="password", key="users_add_password2")
        if st.form_submit_button("Add user"):
            if password != again:
                st.error("The two passwords differ.")
            else:
                users.add(name, role, password)
                st.success(f"User {name} ({role}) added.")
                st.rerun()
    names = [u.name for u in users.users()]
    with change, st.form("users_change_form", clear_on_submit=True):
        st.subheader("Change a user")
        target = st.selectbox("User", names, key="users_change_name")
        new_role = st.selectbox("New role", ["(keep)", *ROLES], key="users_change_role")
        new_password = st.text_input("New password (empty: keep)", type="password", key="users_change_password")
        remove = st.checkbox("Remove this user", key="users_change_remove")
        if st.form_submit_button("Apply"):
            if remove:
                if target == user.name:
                    st.error("You cannot remove yourself.")
                    return
                users.remove(target)
            else:
                if new_role != "(keep)":
                    users.set_role(target, new_role)
                if new_password:
                    users.set_password(target, new_password)
            st.rerun()


ui.run_page(render, role="admin")
