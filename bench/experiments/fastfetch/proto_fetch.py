"""Prototype boundary: like jobs.collect.fetch.fetch_configs, but backup_batch.yml (one run_once task).
usage: proto_fetch.py INVENTORY host1,host2,...   -> JSON {host: {"outputs": [...]} | {"error": ...}}"""
import json, os, shutil, sys, tempfile
from pathlib import Path
sys.path.insert(0, "/work/main")
import ansible_runner
from jobs.collect.fetch import classify, runner_env
from jobs.settings import Settings

HERE = Path(__file__).resolve().parent

def fetch(hosts, inventory, settings):
    found = {}
    def handle(ev):
        d = ev.get("event_data") or {}
        if ev.get("event") in ("runner_on_ok", "runner_on_failed") and d.get("task") == "Collect configuration":
            res = d.get("res") or {}
            for h, r in (res.get("devices") or {}).items():
                found[h] = ({"error": "%s: %s" % (type(e := classify(h, r.get("msg", ""))).__name__, e)}
                            if r.get("failed") else {"outputs": r["outputs"]})
            if ev["event"] == "runner_on_failed":
                found.setdefault("_general", res.get("msg"))
        return False
    work = Path(tempfile.mkdtemp(prefix="proto-runner-"))
    try:
        (work / "env").mkdir()
        env = runner_env(settings, work)
        env["MAX_EVENT_RES"] = str(10**10)  # ansible-runner empties any res over 700000 chars
        env["ANSIBLE_COLLECTIONS_PATH"] = f"{HERE}/collections:/work/main/playbooks/collections"
        env.update({k: v for k, v in os.environ.items() if k.startswith("ANSIBLE_PERSISTENT_")})
        r = ansible_runner.run(private_data_dir=str(work), project_dir=str(HERE), playbook="backup_batch.yml",
                               inventory=str(Path(inventory).absolute()), limit=",".join(hosts),
                               forks=max(1, min(settings.forks, len(hosts))), envvars=env, quiet=True,
                               event_handler=handle, skip_tags="per_host", suppress_env_files=True,
                               timeout=settings.job_timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return found

if __name__ == "__main__":
    json.dump(fetch(sys.argv[2].split(","), sys.argv[1], Settings.load()), sys.stdout)
