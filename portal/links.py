"""A page's widget state in its URL (``st.query_params``), so a reload, a bookmark or a copied link shows the
same view. A page names its fields once: ``{parameter: (session key, kind)}`` with kind ``str``, ``int``,
``bool`` or ``list`` (a repeated parameter). :func:`load` (before the widgets) copies a URL the page has not
written itself (a link, a reload, back / forward) into the widgets' state; :func:`save` (after them) writes
the widgets' state back.

When a URL counts as a link is decided here, once, for every page: on the first run of a page after
arriving on it (a new tab, a reload, a bookmark, a link, or moving from another page, e.g. a dashboard alert
to ``devices?status=stale``: the app tells :func:`arrive` which page each run shows). While the user stays
on a page, its widgets are the truth and the URL only follows them: the browser may still send the URL of
the page's previous state with the next click (seen under load), which must never switch the form back."""

from __future__ import annotations

from typing import Iterable, Mapping

import streamlit as st

Fields = Mapping[str, tuple[str, type]]
_TRUE = {"1", "true", "yes", "on"}


def _url(fields: Fields) -> tuple:
    return tuple((p, tuple(st.query_params.get_all(p))) for p in fields)


_PAGE, _ARRIVING = "_links_page", "_links_arriving"


def arrive(page: str) -> None:
    """Called by the app on every run with the page the run shows (``portal/app.py``)."""
    st.session_state[_ARRIVING] = st.session_state.get(_PAGE) != page
    st.session_state[_PAGE] = page


def arriving() -> bool:
    """Whether this run is the first on its page since the user came to it (module docstring). A page run
    on its own (an AppTest of one view) counts as arriving whenever its URL differs from what it last wrote."""
    return bool(st.session_state.get(_ARRIVING, True))


def load(page: str, fields: Fields, choices: Mapping[str, Iterable[str]] | None = None) -> bool:
    """The URL's values into the session keys when arriving on the page (module docstring); values not
    among ``choices[param]`` are dropped. True when the URL brought values this session had not shown yet."""
    url = _url(fields)
    seen = f"_links_{page}"
    if not arriving() or st.session_state.get(seen) == url or not any(values for _, values in url):
        st.session_state[seen] = url
        return False
    st.session_state[seen] = url
    for param, values in url:
        if not values:
            continue
        key, kind = fields[param]
        allowed = set(choices[param]) if choices and param in choices else None
        if kind is list:
            st.session_state[key] = [v for v in values if allowed is None or v in allowed]
        elif kind is bool:
            st.session_state[key] = values[-1].lower() in _TRUE
        elif kind is int:
            if values[-1].lstrip("-").isdigit():
                st.session_state[key] = int(values[-1])
        elif allowed is None or values[-1] in allowed:
            st.session_state[key] = values[-1]
    return True


def save(page: str, fields: Fields) -> None:
    """The session keys' values into the URL (empty, false and missing values are left out)."""
    for param, (key, kind) in fields.items():
        value = st.session_state.get(key)
        if kind is list:
            value = [str(v) for v in value or []]
        elif kind is bool:
            value = "1" if value else None
        elif value is not None:
            value = str(value)
        if value in (None, "", []):
            st.query_params.pop(param, None)
        elif st.query_params.get_all(param) != (value if isinstance(value, list) else [value]):
            st.query_params[param] = value
    st.session_state[f"_links_{page}"] = _url(fields)
