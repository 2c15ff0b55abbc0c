"""Read an Ansible inventory with ansible-core's own parser and pick hosts from it.

This is the one inventory reader of every DeviceVault process (the collector, the consumer, ``backup``, the
scheduler, the portal, log masking; the lab reads its own through :func:`open_inventory` too). It does what
ansible-core's CLI does before it reads an inventory:

* once per process, :func:`start_ansible` starts Ansible's collection loader (DeviceVault's collection
  first, then Ansible's configured collection paths and the ``ansible_collections`` of this Python
  environment: the ``ansible`` package), so FQCN inventory plugins work: ``plugin:
  ansible.builtin.constructed``, ``ansible.builtin.yaml``, scripts, ``netbox.netbox.nb_inventory``;
* the vault password files of the settings (``DEVICEVAULT_VAULT_PASSWORD_FILE``, else Ansible's own
  ``ANSIBLE_VAULT_PASSWORD_FILE`` / ``ANSIBLE_VAULT_IDENTITY_LIST``) open whole vaulted files and inline
  ``!vault`` values;
* every vaulted value a host has (inline or from a vaulted file) is one of its :attr:`InventoryHost.secrets`,
  masked wherever DeviceVault masks passwords;
* an inventory is one source or several (``ansible-playbook -i a -i b``; as text ``a,b``, Ansible's own
  ``ANSIBLE_INVENTORY`` form), read together as Ansible reads them (:func:`inventory_sources`);
* it owns a host's *storage group* (:attr:`InventoryHost.group`, where its versions are filed): the host's
  ``devicevault_group`` variable, else the alphabetically first group the inventory's own files or its source
  (NetBox's ``group_by``) put it in that is not a platform group, never a group computed by ``groups:`` /
  ``keyed_groups:`` (``ansible.builtin.constructed``), so adding such a group never moves a device's files.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from jobs.errors import InventoryError
from jobs.settings import COLLECTIONS_DIR, VAULT_SETTING, Settings, parse_flag

#: groups every host is in; never a storage group
_IMPLICIT = {"all", "ungrouped"}
#: the methods of Ansible's ``Constructable`` inventory plugins that make groups from templates (``groups:``,
#: ``keyed_groups:``): the groups they create are computed, never a storage group (:func:`_storage_group`)
_COMPUTING = ("_add_host_to_composed_groups", "_add_host_to_keyed_groups")
_SECRET_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass")


@dataclass(frozen=True)
class InventoryHost:
    name: str
    network_os: str
    address: str
    #: the storage group: where the host's versions are filed (:func:`_storage_group` has the rule)
    group: str
    groups: tuple[str, ...] = field(default=())
    #: ``devicevault_location``: the storage location (``jobs/deliver/locations.py``); "" = by group, else default
    location: str = ""
    #: ``devicevault_collector_group``: collected from queue ``collector.group.<name>`` ("" = ``collector``)
    collector_group: str = ""
    #: ``devicevault_max_age``: hours without a successful backup before the device is stale (0 = default)
    max_age: float = 0.0
    #: the platform file's name (``jobs/collect/platforms.py``): ``devicevault_platform``, else the last part
    #: of ``ansible_network_os``; "" when neither names one
    platform: str = ""
    #: ``devicevault_secrets``: mask (default), keep (encrypted targets only) or drop
    secrets_mode: str = "mask"
    #: ``devicevault_keep_raw``: also keep the device output exactly as read, on encrypted targets only
    keep_raw: bool = False
    #: login and enable passwords of the host, only to mask them wherever text leaves a process
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)


def _platform_groups() -> set[str]:
    from jobs.collect.platforms import all_platforms

    return set(all_platforms())


def _platform_name(hv: dict) -> str:
    from jobs.collect.platforms import PLATFORM_VAR, platform_name

    return platform_name(hv.get(PLATFORM_VAR), hv.get("ansible_network_os"))


_ansible_lock = threading.Lock()  # the process-wide Ansible state: collection loader, vault secrets
_ansible_started = False


def start_ansible() -> None:
    """Once per process, what ansible-core's CLI does before it loads any plugin (``CLI.run`` calling
    ``init_plugin_loader``): a UTF-8 locale, a scratch directory, and the collection loader with DeviceVault's
    collection and the installed ``ansible_collections`` on its path. Nothing happens if this process already
    has a collection loader (it is Ansible itself, or another library started one)."""
    global _ansible_started
    with _ansible_lock:
        if _ansible_started:
            return
        os.environ.setdefault("LC_ALL", "C.UTF-8")
        os.environ.setdefault("ANSIBLE_LOCAL_TEMP", "/tmp/devicevault-ansible-tmp")
        from ansible.plugins.loader import init_plugin_loader
        from ansible.utils.collection_loader import AnsibleCollectionConfig

        if AnsibleCollectionConfig.collection_finder is None:
            installed = [p for p in dict.fromkeys(sys.path) if p and (Path(p) / "ansible_collections").is_dir()]
            init_plugin_loader([str(COLLECTIONS_DIR), *installed])
        _ansible_started = True


def _vault_secrets(settings: Settings, path: Path) -> list:
    """``[(vault id, secret)]`` from the settings' vault password files, each read now (a script is run)."""
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import get_file_vault_secret

    secrets = []
    for label, file in settings.vault_ids():
        if not file.exists():
            raise InventoryError(f"{path}: vault password file {file} not found (set by {VAULT_SETTING})")
        try:
            secret = get_file_vault_secret(filename=str(file), vault_id=label, loader=DataLoader())
            secret.load()
        except AnsibleError as exc:
            raise InventoryError(f"{path}: cannot read vault password file {file} (set by {VAULT_SETTING}): "
                                 f"{_one_line(exc)}") from None
        secrets.append((label, secret))
    return secrets


def _use_vault_secrets(secrets: list) -> None:
    """Inline ``!vault`` values decrypt on use, with the process-wide vault secrets (as in ansible-core's CLI);
    the latest settings' secrets replace earlier ones."""
    from ansible.parsing.vault import VaultSecretsContext

    with _ansible_lock:
        context = VaultSecretsContext.current(optional=True)
        if context is None:
            VaultSecretsContext.initialize(VaultSecretsContext(list(secrets)))
        else:
            context.secrets[:] = secrets


def _one_line(exc: BaseException) -> str:
    """An Ansible error's message without its source excerpt (the lines of the file around the error)."""
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())


def _vault_hint(settings: Settings, cause: str, file: str | None = None, held: bool = False) -> str:
    """``cause``, and for a vault failure which file and what to set (``held``: the caller, ansible-playbook,
    gave its own vault secrets too)."""
    if "vault" not in cause.lower() and "decrypt" not in cause.lower():
        return cause
    what = f"cannot decrypt {file}" if file else "cannot decrypt a vaulted value"
    if held:
        setting = f" nor those of {VAULT_SETTING}" if settings.vault_password_file else ""
        return f"{what}: the playbook's vault passwords{setting} do not open it; Ansible says: {cause}"
    if not settings.vault_password_file:
        return f"{what}: no vault password is set ({VAULT_SETTING}); Ansible says: {cause}"
    return f"{what}: wrong vault password in {settings.vault_password_file} ({VAULT_SETTING}); Ansible says: {cause}"


@dataclass
class OpenInventory:
    """An inventory as ansible-core parsed it: the manager, the variables, and what came from vaulted files."""

    manager: Any
    variables: Any
    loader: Any
    #: every string of every vaulted file the loader read (their values are secrets)
    vaulted: set[str]
    #: the first file the loader read with an inline ``!vault`` value, if any (both grow as variable files are
    #: read, which Ansible does lazily, host by host)
    inline_vault: list[str] = field(default_factory=list)
    #: the inventory source (a file or a directory) as given to Ansible; None when there are several
    source: Path | None = None
    #: the groups computed by ``groups:`` / ``keyed_groups:`` of Constructable plugins (``constructed``),
    #: never a storage group
    computed: set[str] = field(default_factory=set)
    #: where the hosts came from, in messages: the source, or the sources comma separated
    where: str = ""
    #: the caller gave vault secrets of its own (``open_inventory``'s ``vault_secrets``)
    held: bool = False
    #: held while the manager and the variables are used (a reused inventory may be shared by threads)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def has_vault(self) -> bool:
        """Whether any value read so far came out of a vault (else a host's variables need no search for one)."""
        return bool(self.vaulted) or bool(self.inline_vault)


#: inventories parsed by this process: ``{(sources, vault ids, held secrets): (parsed at, fingerprint, inventory)}``
_REUSED: dict[tuple[str, str, tuple], tuple[float, tuple, OpenInventory]] = {}


def inventory_sources(inventory: Path | str | Sequence[Path | str]) -> list[Path]:
    """The sources of an inventory as ``ansible-playbook -i a -i b`` takes them: one path (a file or a
    directory), a list, or text naming several comma separated (``a,b``: Ansible's ``ANSIBLE_INVENTORY`` form,
    and how a run records them, :func:`inventory_text`); a path that exists as written is one source."""
    if isinstance(inventory, (list, tuple)):
        parts = [str(p) for p in inventory]
    else:
        text = str(inventory)
        parts = [text] if "," not in text or Path(text).exists() else text.split(",")
    return [Path(p.strip()) for p in parts if p.strip()]


def inventory_text(inventory: Path | str | Sequence[Path | str]) -> str:
    """The inventory's sources as one text, absolute, comma separated (one source: its absolute path)."""
    return ",".join(str(p.absolute()) for p in inventory_sources(inventory))


def _fingerprint(sources: list[Path], settings: Settings) -> tuple:
    """What an inventory's parse depends on, as file stats: every file under a directory source, or a file
    source with its ``group_vars/`` and ``host_vars/``, and the vault password files."""
    roots: list[Path] = []
    for path in sources:
        roots += [path] if path.is_dir() else [path, path.parent / "group_vars", path.parent / "host_vars"]
    roots += [file for _, file in settings.vault_ids()]
    found = []
    for root in roots:
        for directory, dirs, files in os.walk(root) if root.is_dir() else [(str(root.parent), [], [root.name])]:
            dirs.sort()
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(directory, name))
                except OSError:
                    continue
                found.append((directory, name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(found)


def open_inventory(path: Path | str | Sequence[Path | str], settings: Settings | None = None, *,
                   fresh_within: float | None = None, vault_secrets: Sequence[tuple[str, Any]] = ()) -> OpenInventory:
    """Parse the inventory at ``path`` (one source or several, :func:`inventory_sources`) as ``ansible-playbook
    -i path`` would, with the settings' vault passwords and ``vault_secrets`` (``(vault id, secret)`` pairs
    loaded already: those of the ``ansible-playbook`` this runs in, prompted ones included). Raises
    :class:`InventoryError` naming the inventory and the cause.

    A process reuses what it parsed for up to ``settings.inventory_reuse`` seconds while no file of the
    inventory (nor a vault password file) changed (:func:`_fingerprint`): a worker parses a large inventory
    once (``jobs/worker.py`` does it before forking each collection job's work horse) instead of once per
    batch. A dynamic inventory (NetBox, a script) is read again after that time at the latest, or after
    ``fresh_within`` seconds where the caller asks for a fresher one."""
    import time

    sources = inventory_sources(path)
    if not sources:
        raise InventoryError(f"{path!s}: no inventory source named")
    for source in sources:
        if not source.exists():
            raise InventoryError(f"{source}: inventory not found")
    settings = settings or Settings.load()
    key = (inventory_text(sources), settings.vault_password_file or "", tuple(id(s) for _, s in vault_secrets))
    reused = _REUSED.get(key)
    fingerprint = _fingerprint(sources, settings) if settings.inventory_reuse > 0 else ()
    longest = settings.inventory_reuse if fresh_within is None else min(fresh_within, settings.inventory_reuse)
    if reused and time.monotonic() - reused[0] < longest and reused[1] == fingerprint:
        return reused[2]
    _REUSED.pop(key, None)
    opened = _parse(sources, settings, list(vault_secrets))
    if settings.inventory_reuse > 0:
        _REUSED[key] = (time.monotonic(), fingerprint, opened)
    return opened


def _parse(sources: list[Path], settings: Settings, held: list) -> OpenInventory:
    start_ansible()
    _forget_vars_files()
    from ansible.errors import AnsibleError
    from ansible.inventory.data import InventoryData
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import is_encrypted
    from ansible.vars.manager import VariableManager

    vaulted: set[str] = set()
    inline: list[str] = []  # the first file read with an inline !vault value, if any
    encrypted: dict[str, bool] = {}
    failed: list[tuple[str, str]] = []  # (file, Ansible's message) of the files Ansible could not load

    def is_vaulted(file: str) -> bool:
        if file not in encrypted:
            try:
                with open(file, "rb") as fh:
                    encrypted[file] = is_encrypted(fh.read(64))
            except OSError:
                encrypted[file] = False
        return encrypted[file]

    class Loader(DataLoader):
        """Ansible's loader, noting the values of every vaulted file it reads (group_vars/all.yml...)."""

        @property
        def failed(self) -> str | None:
            """The last file Ansible could not load (a vaulted one it could not decrypt), if any."""
            return failed[-1][0] if failed else None

        def load_from_file(self, file_name, *args, **kwargs):
            real = self.path_dwim(file_name)
            try:
                data = super().load_from_file(file_name, *args, **kwargs)
            except AnsibleError as exc:
                failed.append((real, _one_line(exc)))
                raise
            if is_vaulted(real):
                vaulted.update(str(text) for text in _strings(data))
            elif not inline and any(_from_vault(text) for text in _strings(data)):
                inline.append(real)
            return data

    computed: set[str] = set()

    class Data(InventoryData):
        """Ansible's inventory data, noting the groups a Constructable plugin's ``groups:`` / ``keyed_groups:``
        create: those its group-making methods (:data:`_COMPUTING`) add. A plugin may be loaded by another one
        (``auto`` loads ``constructed``), so it is the caller that tells, not the plugin list."""

        def add_group(self, group):
            count = len(self.groups)
            name = super().add_group(group)
            if len(self.groups) > count and sys._getframe(1).f_code.co_name in _COMPUTING:
                computed.add(name)
            return name

    where = ",".join(str(s) for s in sources)
    secrets = list(held) + [s for s in _vault_secrets(settings, Path(where)) if s not in held]
    _use_vault_secrets(secrets)
    loader = Loader()
    loader.set_vault_secrets(secrets)
    try:
        manager = InventoryManager(loader=loader, sources=[str(s) for s in sources], parse=False)
        manager._inventory = Data()  # noqa: SLF001 - what __init__ made, not used yet (parse=False)
        manager.parse_sources(cache=False)
    except AnsibleError as exc:
        raise InventoryError(f"{where}: cannot parse inventory: "
                             f"{_vault_hint(settings, _one_line(exc), loader.failed, bool(held))}") from None
    if failed:  # Ansible warns and goes on without that file's hosts: a backup must not lose devices silently
        file, cause = failed[-1]
        detail = _vault_hint(settings, cause, file, bool(held)) if is_vaulted(file) else f"{file}: {cause}"
        raise InventoryError(f"{where}: cannot parse inventory: {detail}")
    if not manager._sources or not manager.get_hosts():  # noqa: SLF001 - no public "parsed ok" flag
        raise InventoryError(f"{where}: no hosts found (malformed or empty inventory?)")
    return OpenInventory(manager, VariableManager(loader=loader, inventory=manager), loader, vaulted, inline,
                         source=sources[0] if len(sources) == 1 else None, computed=computed, where=where,
                         held=bool(held))


def inventory_names(path: Path | str, settings: Settings | None = None, *, fresh_within: float | None = None
                    ) -> set[str]:
    """The names of the inventory's hosts (no host's variables are worked out). Raises :class:`InventoryError`."""
    opened = open_inventory(path, settings, fresh_within=fresh_within)
    with opened.lock:
        return {host.name for host in opened.manager.get_hosts()}


def inventory_groups(path: Path | str, settings: Settings | None = None, *, fresh_within: float | None = None
                     ) -> dict[str, tuple[str, ...]]:
    """Each host's groups (every one it is in, ``all`` and ``ungrouped`` left out), by host name; no host's
    variables are worked out. Raises :class:`InventoryError`."""
    opened = open_inventory(path, settings, fresh_within=fresh_within)
    with opened.lock:
        return {host.name: tuple(sorted(g.name for g in host.get_groups() if g.name not in _IMPLICIT))
                for host in opened.manager.get_hosts()}


def _forget_vars_files() -> None:
    """Ansible's ``host_group_vars`` plugin remembers, per process, which ``group_vars``/``host_vars`` files
    exist; a new parse must look again (a file may have been added since)."""
    from ansible.plugins.vars import host_group_vars

    host_group_vars.FOUND.clear()
    host_group_vars.NAK.clear()


def _strings(value: Any) -> Iterator[Any]:
    """Every string inside ``value`` (keys excepted) as it is there: ``str``, or an inline vaulted
    ``EncryptedString`` (``str()`` decrypts it)."""
    from ansible.parsing.vault import EncryptedString

    if isinstance(value, (str, EncryptedString)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _strings(item)


def _from_vault(value: Any) -> bool:
    """An inline ``!vault`` value: still encrypted, or decrypted (by a template) and tagged as such."""
    from ansible.parsing.vault import EncryptedString, VaultedValue

    return isinstance(value, EncryptedString) or VaultedValue.is_tagged_on(value)


def _vaulted_values(variables: dict, vaulted: set[str]) -> Iterator[str]:
    """A host's vaulted strings: inline ``!vault`` values and the values of vaulted files."""
    for value in _strings(variables):
        if _from_vault(value) or value in vaulted:
            yield str(value)


def load_inventory(
    path: Path | str | Sequence[Path | str], settings: Settings | None = None, *, only: Iterable[str] | None = None,
    vault_secrets: Sequence[tuple[str, Any]] = (),
) -> dict[str, InventoryHost]:
    """Every host of the inventory at ``path`` (one source or several) by name (vault passwords from
    ``settings``, default: the environment's, and ``vault_secrets``: see :func:`open_inventory`); with ``only``,
    just those of these names that it has (a batch's hosts: working out each host's variables is most of the
    cost on a large inventory). Raises :class:`InventoryError` naming the inventory and the cause."""
    settings = settings or Settings.load()
    opened = open_inventory(path, settings, vault_secrets=vault_secrets)
    with opened.lock:
        return _read_hosts(opened, opened.where, settings, only)


def _storage_group(variables: dict, groups: tuple[str, ...], computed: set[str], platform_groups: set[str],
                   platform: str) -> str:
    """A host's storage group, the folder its versions are filed under on every target (and the group
    ``groups:`` of the storage file maps to a location): its ``devicevault_group`` variable; else the
    alphabetically first of its groups that the inventory's own files or source made (NetBox's ``group_by``
    included) and that is not a platform group (``ios``, ``eos``, the host's own platform name); else the first
    such platform group; else ``ungrouped``. A group computed by ``groups:`` / ``keyed_groups:``
    (``ansible.builtin.constructed``, or a dynamic source's own keyed groups) is never one: it comes and goes
    with variables, and a device's files must not move with it."""
    if variables.get("devicevault_group"):
        return str(variables["devicevault_group"])
    own = [g for g in groups if g not in computed]
    site = [g for g in own if g not in platform_groups and g != platform]
    return (site or own or ["ungrouped"])[0]


def _read_hosts(opened: OpenInventory, path: str, settings: Settings, only: Iterable[str] | None
                ) -> dict[str, InventoryHost]:
    from ansible.errors import AnsibleError

    platform_groups = _platform_groups()
    hosts = {}
    chosen = opened.manager.get_hosts()
    if only is not None:
        wanted = set(only)
        chosen = [host for host in chosen if host.name in wanted]
    for host in chosen:
        try:  # inventory vars plus group_vars/ and host_vars/ files, as a play would see them
            hv = opened.variables.get_vars(host=host, include_hostvars=False)
            secrets = [str(hv[k]) for k in _SECRET_VARS if isinstance(hv.get(k), str) and "{{" not in hv[k]]
            if opened.has_vault:
                secrets += _vaulted_values(hv, opened.vaulted)
            network_os = str(hv.get("ansible_network_os") or "")
            address = str(hv.get("ansible_host") or host.name)
        except AnsibleError as exc:
            raise InventoryError(f"{path}: cannot read variables of host {host.name!r}: "
                                 f"{_vault_hint(settings, _one_line(exc), opened.loader.failed, opened.held)}") from None
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name not in _IMPLICIT))
        own_platform = _platform_name(hv)
        hosts[host.name] = InventoryHost(
            name=host.name,
            network_os=network_os,
            address=address,
            group=_storage_group(hv, groups, opened.computed, platform_groups, own_platform),
            groups=groups,
            location=str(hv.get("devicevault_location") or ""),
            collector_group=str(hv.get("devicevault_collector_group") or ""),
            max_age=_hours(hv.get("devicevault_max_age"), path, host.name),
            platform=own_platform,
            secrets_mode=_secrets_mode(hv.get("devicevault_secrets"), path, host.name),
            keep_raw=_flag(hv.get("devicevault_keep_raw"), path, host.name, "devicevault_keep_raw"),
            secrets=tuple(dict.fromkeys(secrets)),
        )
    return hosts


def _flag(value, path, host: str, name: str) -> bool:
    flag = False if value is None else parse_flag(value)
    if flag is None:
        raise InventoryError(f"{path}: host {host!r}: {name} must be true or false, not {value!r}")
    return flag


def _secrets_mode(value, path, host: str) -> str:
    mode = str(value or "mask").strip().lower()
    if mode not in ("mask", "keep", "drop"):
        raise InventoryError(f"{path}: host {host!r}: devicevault_secrets must be mask, keep or drop, not {value!r}")
    return mode


def _hours(value, path, host: str) -> float:
    if value in (None, ""):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InventoryError(f"{path}: host {host!r}: devicevault_max_age must be a number of hours, not {value!r}") from None


def select_hosts(
    inventory: dict[str, InventoryHost], *, groups: list[str] | None = None, hosts: list[str] | None = None
) -> list[InventoryHost]:
    """Hosts in any of ``groups`` plus the named ``hosts``; everything when neither is given."""
    if not groups and not hosts:
        return sorted(inventory.values(), key=lambda h: h.name)
    chosen: dict[str, InventoryHost] = {}
    for name in hosts or []:
        if name not in inventory:
            raise InventoryError(f"host {name!r} is not in the inventory")
        chosen[name] = inventory[name]
    for group in groups or []:
        members = [h for h in inventory.values() if group in h.groups]
        if not members:
            raise InventoryError(f"group {group!r} is not in the inventory (or has no hosts)")
        chosen.update((h.name, h) for h in members)
    return sorted(chosen.values(), key=lambda h: h.name)


def write_batch_inventory(opened: OpenInventory, hosts: Iterable[str], directory: Path) -> Path | None:
    """A static inventory of just ``hosts`` in ``directory``, for the batch's ``ansible-playbook``: Ansible then
    parses 50 hosts instead of the whole inventory per batch (on 1,000 hosts that is 0.9 CPU-s per batch,
    on 100,000 most of the batch's cost). Returns its path, or None when the whole inventory must be used.

    What it holds, so every host's variables are what the whole inventory gives it: each host with the
    variables its inventory source set on it (those a dynamic source such as NetBox or ``constructed`` computed
    included, as computed when the inventory was parsed), every group it is in with that group's variables,
    priority and parent groups (so Ansible's group precedence is the same), and ``group_vars``/``host_vars``
    linked from the inventory's own directory. Inline ``!vault`` values stay encrypted. Not the same: a
    variable that templates another host's ``hostvars`` or ``groups['…']`` sees only the batch. The
    ``tests/test_batch_inventory.py`` test compares every variable of every host both ways."""
    from ansible.parsing.yaml.dumper import AnsibleDumper
    import yaml

    if opened.source is None:
        return None
    base = opened.source if opened.source.is_dir() else opened.source.parent
    with opened.lock:
        chosen = [h for h in (opened.manager.get_host(name) for name in dict.fromkeys(hosts)) if h is not None]
        groups: dict[str, Any] = {}
        for host in chosen:
            for group in host.get_groups():
                groups.setdefault(group.name, group)
        tree: dict[str, dict] = {}
        placed: set[str] = set()  # hosts whose variables are written (once: Ansible merges repeats)
        for name, group in groups.items():
            entry: dict[str, Any] = {}
            variables = dict(group.vars)
            if group.priority != 1:
                variables["ansible_group_priority"] = group.priority
            if variables:
                entry["vars"] = variables
            members = {}
            for host in chosen:
                if group in host.groups and name != "all":
                    members[host.name] = None if host.name in placed else (dict(host.vars) or None)
                    placed.add(host.name)
            children = {c.name: {} for c in group.child_groups if c.name in groups and c.name != "ungrouped"}
            if members:
                entry["hosts"] = members
            if children:
                entry["children"] = children
            tree[name] = entry
        document = {"all": tree.pop("all", {})}
        document["all"].setdefault("children", {}).update(tree)  # every other group, with its hosts and vars
        try:
            text = yaml.dump(document, Dumper=AnsibleDumper, default_flow_style=False, allow_unicode=True)
        except Exception:  # noqa: BLE001 - a value YAML cannot hold: use the whole inventory
            return None
    directory.mkdir(parents=True, exist_ok=True)
    for kind in ("group_vars", "host_vars"):
        if (base / kind).is_dir():
            (directory / kind).symlink_to((base / kind).absolute())
    target = directory / "batch.yml"
    target.write_text(text, encoding="utf-8")
    return target
