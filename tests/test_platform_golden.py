"""Golden-file tests for every platform file (Oxidized's spec/model style, but data-driven).

For each ``tests/golden/<platform>/``: the raw device outputs in ``raw/`` normalise to exactly
``expected.txt``; none of the strings in ``secrets.txt`` (each present in the raw output) survives;
``changed_by.txt`` (required when the platform has ``changed_by`` rules) is who last changed it; and
removing any single ``noise``, ``replace``, ``secrets`` or ``changed_by`` rule from the platform file
changes the result, so every rule is proven by real input. ``platforms/README.md`` of DeviceVault's
collection (``playbooks/collections/ansible_collections/devicevault/network/``) explains the layout.

The golden files are test data, so the tool that (re)writes ``expected.txt`` lives here too:

    python -m tests.test_platform_golden ios            # print what tests/golden/ios/raw/* normalise to
    python -m tests.test_platform_golden ios --write    # and write it to tests/golden/ios/expected.txt
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from jobs.collect.normalize import SECRET_PLACEHOLDER, SecretsMode, normalize
from jobs.collect.platforms import PlatformError, all_platforms, get_platform

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def golden_outputs(name: str, root: Path = GOLDEN_DIR) -> list[str]:
    """The raw device outputs of a platform's golden case, in command order."""
    files = sorted((root / name / "raw").glob("*.txt"))
    if not files:
        raise PlatformError(f"{root / name / 'raw'}: no raw output files (01-<command>.txt, ...)")
    return [f.read_bytes().decode("utf-8", errors="surrogateescape") for f in files]

GOLDEN = sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / "raw").is_dir()) if GOLDEN_DIR.is_dir() else []


def _expected(name: str) -> str:
    return (GOLDEN_DIR / name / "expected.txt").read_bytes().decode("utf-8", errors="surrogateescape")


def _secrets(name: str) -> list[str]:
    path = GOLDEN_DIR / name / "secrets.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


def _rules():
    for name in GOLDEN:
        platform = get_platform(name)
        for kind in ("noise", "replace", "secrets", "changed_by"):
            for index in range(len(getattr(platform, kind))):
                yield pytest.param(name, kind, index, id=f"{name}-{kind}-{index}")


def test_every_platform_file_has_golden_files():
    assert set(all_platforms()) <= set(GOLDEN), f"platforms without tests/golden/<name>/: {set(all_platforms()) - set(GOLDEN)}"
    assert len(all_platforms()) >= 12


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_output(name):
    platform = get_platform(name)
    assert platform is not None, f"tests/golden/{name} has no platform file {name}.yml"
    result = normalize(f"golden-{name}", platform, golden_outputs(name))
    assert result.text == _expected(name)
    if platform.startup:  # golden input is a saved device: running and startup agree once normalised
        assert result.unsaved is False


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_changed_by(name):
    platform = get_platform(name)
    path = GOLDEN_DIR / name / "changed_by.txt"
    if not platform.changed_by:
        assert not path.exists(), f"{path} names an author, but {name}.yml has no changed_by rule"
        return
    assert path.exists(), f"{name}.yml has changed_by rules: {path} must name the author of the golden input"
    assert normalize(f"golden-{name}", platform, golden_outputs(name)).changed_by == path.read_text().strip()


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_secrets_never_stored(name):
    raw = "\n".join(golden_outputs(name))
    secrets = _secrets(name)
    assert secrets, f"tests/golden/{name}/secrets.txt lists no secret"
    platform = get_platform(name)
    for mode in (SecretsMode.MASK, SecretsMode.DROP):
        text = normalize(f"golden-{name}", platform, golden_outputs(name), mode).text
        for secret in secrets:
            assert secret in raw, f"{name}: secrets.txt lists {secret!r}, which the raw output does not contain"
            assert secret not in text, f"{name}: secret {secret!r} survived with secrets={mode.value}"
    assert SECRET_PLACEHOLDER in normalize(f"golden-{name}", platform, golden_outputs(name)).text
    kept = normalize(f"golden-{name}", platform, golden_outputs(name), SecretsMode.KEEP)
    assert all(secret in kept.text for secret in secrets if secret in "\n".join(golden_outputs(name)[:len(platform.commands)]))
    assert kept.compare == _expected(name)  # what decides "changed" is the masked view, whatever is stored


@pytest.mark.parametrize("name,kind,index", list(_rules()))
def test_every_rule_is_needed(name, kind, index):
    platform = get_platform(name)
    rules = list(getattr(platform, kind))
    removed = rules.pop(index)
    weaker = dataclasses.replace(platform, **{kind: tuple(rules)})
    full = normalize(f"golden-{name}", platform, golden_outputs(name))
    result = normalize(f"golden-{name}", weaker, golden_outputs(name))
    pattern = getattr(removed, "pattern", removed)
    pattern = getattr(pattern, "pattern", pattern)
    # a rule proves itself in the stored text, in the author, or (startup noise) in the running/startup
    # comparison
    assert (result.text, result.changed_by, result.unsaved) != (_expected(name), full.changed_by, full.unsaved), (
        f"{name}: removing {kind} rule {pattern!r} changes nothing in the golden output")


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.test_platform_golden",
                                 description="normalise tests/golden/<name>/raw/* and show or write expected.txt")
    ap.add_argument("name")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    platform = get_platform(a.name)
    if platform is None:
        print(f"no platform file for {a.name!r}", file=sys.stderr)
        return 2
    result = normalize(f"golden-{a.name}", platform, golden_outputs(a.name))
    if a.write:
        target = GOLDEN_DIR / a.name / "expected.txt"
        target.write_bytes(result.text.encode("utf-8", errors="surrogateescape"))
        print(f"wrote {target} (changed_by={result.changed_by!r}, unsaved={result.unsaved})")
    else:
        sys.stdout.write(result.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
