"""The console in a real browser: Debian's chromium, headless, loads the
console of a running daemon after a small simulated program and finds each
exposure's stages, a held exposure with its reason, a missing exposure, a dead
letter and preview images that load.

chromium is installed by `make tools`; without it this test skips, except
under CI=true. CONSOLE_SCREENSHOTS=DIR keeps the screenshots (docs/ has them).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import anyio
import pytest

from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract

from .support import daemon_config, products, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--hide-scrollbars", "--virtual-time-budget=10000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    why = "chromium is not installed: `make tools` installs Debian's chromium package"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def browse(browser: str, profile: Path, url: str, *extra: str) -> str:
    result = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def planner_missing(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/planner", timeout=5) as r:
        view = json.load(r)
    return (view.get("namespaces", {}).get("live", {}).get("stage3", {}) or {}).get("missing", {})


async def test_the_console_in_a_headless_browser(tmp_path, broker, kit, unique_prefix):
    browser = chromium()
    # A 3-dither visit: exposure 1 calibrates through stage 2, exposure 2 is
    # held (PLANNED pointing), exposure 3 is never delivered (missing); a
    # file that is not FITS becomes a dead letter.
    spec = dataclasses.replace(ProgramSpec(), planned=(2,), dithers=3)
    files = simulate_program(tmp_path / "uncal", spec, seed=11)
    good, held, missing = (eid(f) for f in files)
    name = parse_exposure_name(files[0].name)
    junk = tmp_path / f"jw{name.program}{name.observation}{name.visit}_02101_00091_nrcb1_uncal.fits"
    junk.write_text("a telemetry log, not a FITS file\n" * 50)
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, incomplete_timeout=2.0,
                        stage3_settle=0.0, stage3_quiet_period=3600.0)
    async with running_daemon(cfg) as daemon:
        await anyio.to_thread.run_sync(lambda: deliver([*files[:2], junk], cfg.inbox))
        msgs = await wait_for(cfg, ["products", "holds", "deadletter"], lambda ms: (
            good in {p["exposure_id"] for p in products(ms, "stage2")}
            and any(m.type == "hold" and m["exposure_id"] == held for m in ms
                    if isinstance(m, contract.Message))
            and any(m.type == "dead_letter" for m in ms if isinstance(m, contract.Message))),
            timeout=600)
        previews = [p["path"] for m in products(msgs, "stage2") + products(msgs)
                    for p in m.get("previews", [])]
        assert previews
        for _ in range(240):  # made after the event: wait for them and the planner's view
            if all(Path(p).exists() for p in previews) and \
                    missing in planner_missing(daemon.ops.address):
                break
            await anyio.sleep(0.5)
        base = f"http://{daemon.ops.address}/console"
        page = f"{base}/program/{name.program}/{name.observation}"

        def look() -> tuple[str, str]:
            return (browse(browser, tmp_path / "profile1", f"{base}/", "--dump-dom"),
                    browse(browser, tmp_path / "profile2", page, "--dump-dom"))

        front, dom = await anyio.to_thread.run_sync(look)
        text = html.unescape(dom)
        assert f"/console/program/{name.program}/{name.observation}" in front
        # Each exposure's stages: exposure 1 done through stage 2, exposure 2 through detector1.
        rows = {m.group(1): m.group(0) for m in re.finditer(
            r'<tr class="[a-z]*" id="([^"]+)">.*?</tr>', text, re.S)}
        assert rows[good].count("done") == 2
        assert rows[held].count("done") == 1
        # The held exposure and its reason; the missing exposure; the dead letter.
        assert "held: " in rows[held] and "PLANNED" in rows[held]
        assert re.search(rf'<tr class="missing"><td>{missing}</td>', text)
        dead = rows[eid(junk)]
        assert 'class="dead"' in dead and "dead letter (watcher)" in dead
        assert "not a fits" in dead.lower()
        # Preview images that load: a page of the same thumbnails, each
        # reporting its decoded size once loaded.
        sources = re.findall(r'<img class="thumb" src="([^"]+)"', dom)
        assert len(sources) >= 2
        check = tmp_path / "images.html"
        check.write_text(
            "<!doctype html><body>" + "".join(
                f'<img src="http://{daemon.ops.address}{html.unescape(s)}">' for s in sources)
            + "<pre id=out></pre><script>window.onload=()=>{document.getElementById('out')"
            ".textContent=[...document.images].map(i=>i.naturalWidth+'x'+i.naturalHeight)"
            ".join(' ')}</script></body>")
        loaded = await anyio.to_thread.run_sync(
            lambda: browse(browser, tmp_path / "profile3", check.as_uri(), "--dump-dom"))
        sizes = re.search(r'<pre id="out">([^<]*)</pre>', loaded).group(1).split()
        assert len(sizes) == len(sources) and all(s != "0x0" for s in sizes), sizes
        shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)

        def screenshots() -> None:
            for url, png, size in ((f"{base}/", "console-index.png", "1200,620"),
                                   (page, "console-observation.png", "1200,1300")):
                browse(browser, tmp_path / "profile4", url, f"--screenshot={shots / png}",
                       f"--window-size={size}")

        await anyio.to_thread.run_sync(screenshots)
        assert (shots / "console-observation.png").stat().st_size > 0
