import json, sys
sys.path.insert(0, "/work/main")
from jobs.collect.normalize import clean_lines
from jobs.collect.platforms import get_platform
p = get_platform("ios")
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
hs = sorted(set(a) | set(b) - {"_general"})
raw = norm = 0; bad = []
for h in hs:
    x, y = a.get(h, {}).get("outputs"), b.get(h, {}).get("outputs")
    if x is None or y is None: bad.append((h, "missing")); continue
    raw += x == y
    if len(x) == len(y) and all(clean_lines(p, i) == clean_lines(p, j) for i, j in zip(x, y)): norm += 1
    else: bad.append((h, "differs"))
print(f"hosts={len(hs)} identical raw={raw} identical after DeviceVault's normalisation (volatile lines)={norm} bad={bad[:5]}")
