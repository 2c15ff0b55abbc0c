"""DeviceVault simulated device lab.

One asyncio/asyncssh process serves many simulated network devices over real
SSH on loopback addresses. Devices come from an Ansible inventory; behaviour of
each platform is described by a YAML personality in ``lab/personalities`` and a
Jinja2 config template in ``lab/templates``.

Public entry points:
  * :mod:`lab.commands` -- ``up``, ``down``, ``change``, ``save``, ``fault``,
    ``status``, ``wait_ready`` (used by ``python -m lab`` and ``devicevault lab``)
  * :mod:`lab.control`  -- ``LabControl(state_dir)`` per-device state API, and the SSH
    sessions the lab holds (``sessions()``, ``reset_session_peak()``, ``wait_sessions()``;
    counted by :mod:`lab.sessions`)
  * :mod:`lab.testing`  -- ``running_lab(...)`` context manager for tests
  * :mod:`lab.generate_inventory` -- ``generate_inventory(...)``
"""
