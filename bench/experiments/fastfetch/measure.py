"""Measure fetch_configs vs the prototype on the same hosts (child subreaper via bench.fetch --measure)."""
import json, os, subprocess, sys, time
from pathlib import Path
HERE = Path(__file__).resolve().parent
PY = "/work/main/.venv/bin/python"
INV = str(HERE / "inv")

def hosts():
    import yaml
    d = yaml.safe_load(open(HERE / "inv/hosts.yml"))
    out = []
    def walk(g):
        out.extend((g.get("hosts") or {}).keys())
        for c in (g.get("children") or {}).values():
            walk(c)
    walk(d["all"]); return list(dict.fromkeys(out))

def run(name, cmd, env_extra=None):
    env = dict(os.environ); env.update(env_extra or {})
    res, out = HERE / f"{name}.json", HERE / f"{name}.out"
    subprocess.run([PY, "-m", "bench.fetch", "--measure", str(res), str(out), "--", *cmd], cwd="/work/main", env=env, check=True)
    m = json.loads(res.read_text())
    txt = out.read_text(errors="replace")
    data = json.loads(txt[txt.index("{"):txt.rindex("}") + 1])
    return m, data

def lab_cpu():
    pid = int(open(HERE / "state/lab.pid").read()) if (HERE / "state/lab.pid").exists() else None
    return pid

if __name__ == "__main__":
    which = sys.argv[1:] or ["current", "proto"]
    hs = hosts()
    if os.environ.get("LIMIT"):
        hs = hs[:int(os.environ["LIMIT"])]
    cmds = {"current": [PY, "-m", "bench.fetch", "--inner-fetch", INV, ",".join(hs)],
            "proto": [PY, str(HERE / "proto_fetch.py"), INV, ",".join(hs)]}
    results = {}
    for v in which:
        run(v + "-warm", cmds[v][:-1] + [hs[0]])
        m, data = run(v, cmds[v])
        ok = sum(1 for h in hs if "outputs" in data.get(h, {}))
        print(f"{v:8s} n={len(hs)} ok={ok} cpu={m['cpu']:.2f}s cpu/dev={m['cpu']/len(hs):.3f} wall={m['wall']:.1f}s "
              f"peakMB={m['peak_pss_mb']:.0f} peak_procs={m['peak_procs']} lingering={m['lingering']} rc={m['rc']}", flush=True)
        errs = {h: d["error"] for h, d in data.items() if "error" in d}
        if errs: print("  errors:", json.dumps(errs)[:2000])
        results[v] = data
        (HERE / f"{v}.data.json").write_text(json.dumps(data))
    if len(results) == 2:
        a, b = results["current"], results["proto"]
        same = [h for h in hs if a.get(h, {}).get("outputs") == b.get(h, {}).get("outputs") and "outputs" in a.get(h, {})]
        print(f"identical outputs (all commands): {len(same)}/{len(hs)}")
        diff = [h for h in hs if h not in same]
        if diff: print("  differ:", diff[:10])
