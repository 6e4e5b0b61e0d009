"""`berth demo` end to end against a real `berth up`, its story checked step by step."""

from __future__ import annotations

import re

from tests.cli.conftest import Instance, berth


def sections(output: str) -> dict[int, str]:
    """The demo's output cut at its `[n/8]` headings."""
    parts = re.split(r"^\[(\d)/8\] ", output, flags=re.MULTILINE)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_the_demo_tells_the_whole_story(instance: Instance) -> None:
    result = berth("demo", "--model", "demo-story", env=instance.env, timeout=240)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    steps = sections(result.stdout)
    assert sorted(steps) == list(range(1, 9))

    assert "Train two versions" in steps[1]
    assert re.search(r"first: +LogisticRegression +accuracy 0\.\d+", steps[1])

    pushed = [
        int(v) for v in re.findall(r"pushed demo-story v(\d+) +sha256 [0-9a-f]{16}", steps[2])
    ]
    assert len(pushed) == 2
    first, second = pushed
    assert second == first + 1

    # Promote the first, wait for serving, predict: answered by the first.
    assert f"demo-story@production → v{first}" in steps[3]
    assert "rolled out: every live serving replica (1) serves it" in steps[3]
    assert f"answered by v{first}: ['setosa', 'versicolor', 'virginica']" in steps[3]

    # The hot swap: same process, the next predict is answered by the second.
    assert f"demo-story@production → v{second}" in steps[4]
    assert f"answered by v{second}:" in steps[4]

    # 50/50, sticky: every key sees one version five times; both versions take traffic.
    assert f"v{first} 50% · v{second} 50%" in steps[5]
    sticky = re.findall(r"key '(\w+)' +5 requests -> versions \[([\d, ]+)\]", steps[5])
    assert len(sticky) == 3
    for _key, seen in sticky:
        assert len(set(seen.split(", "))) == 1, seen
    shares = dict(re.findall(r"v(\d+): (\d+) \(\d+%\)", steps[5]))
    assert set(shares) == {str(first), str(second)}
    assert sum(map(int, shares.values())) == 200
    assert all(60 <= int(n) <= 140 for n in shares.values()), shares

    # Rollback undoes the split: the alias serves the second version alone again.
    assert f"demo-story@production → v{second}" in steps[6]
    assert "a rollback" in steps[6]
    assert f"(@production) answered by v{second}" in steps[6]

    assert f"(pinned v{second}) answered by v{second}" in steps[7]

    assert "rollback to 2" in steps[8]
    assert "Done: pushed, promoted, hot-swapped, split, rolled back and pinned." in result.stdout
