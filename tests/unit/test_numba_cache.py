"""numba compiles the x86 kernels once per machine: a second process loads them from disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, sys
    import workbench as wb
    from workbench import zoo
    from numba.core.registry import CPUDispatcher
    import workbench.engine.backends.x86 as x86pkg

    for name in ["tiny_resnet", "tiny_bert"]:
        sess = wb.Session(wb.load(zoo.get(name)), "x86")
        sess.run(sess.random_feeds())

    hits = misses = used = 0
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith(x86pkg.__name__):
            continue
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and obj.signatures:
                used += 1
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
    print(json.dumps({"used": used, "hits": hits, "misses": misses}))
    """
)


def _probe(cache_dir: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
    first = _probe(str(tmp_path))
    assert first["used"] > 0, "no numba kernel ran: the x86 backend should use some"
    assert first["misses"] > 0  # a cold cache compiles
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache index"
    second = _probe(str(tmp_path))
    # (a helper called only from inside another jitted function is compiled with its caller
    # in the first process and never needed on its own in the second, so counts may differ)
    assert second["misses"] == 0, f"second process recompiled: {second}"
    assert second["hits"] > 0


def test_the_cache_folder_is_one_per_version_of_the_sources(tmp_path):
    """numba checks only the file of the function it loads, not the files it inlines
    from: a changed source anywhere in the package must start a fresh cache folder."""
    from workbench import _cache

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_text("x = 1\n")
    first = _cache.tree_digest(tmp_path)
    assert _cache.tree_digest(tmp_path) == first
    (tmp_path / "a" / "m.py").write_text("x = 2\n")
    assert _cache.tree_digest(tmp_path) != first
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["WORKBENCH_CACHE"] = str(tmp_path / "cache")
    probe = "import os, workbench; print(os.environ['NUMBA_CACHE_DIR'])"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    folder = out.stdout.strip().splitlines()[-1]
    assert folder == str(tmp_path / "cache" / "numba" / _cache.source_digest())
