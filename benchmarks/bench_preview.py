"""The live preview's refresh time in a real browser (prints figures; not a test).

Starts the app on a checkpoint (default: the bundled one, which ships the distilled student and
the tiny decoder), logs in as the demo admin in headless Chromium and, ``--rounds`` times each,
clicks a view or side button or types a lesion box, timing from the click to the new preview
image on screen (the whole path: browser event, Gradio queue, student + tiny decoder + privacy
gate, PNG, back to the page).

    python benchmarks/bench_preview.py                  # bundled checkpoint, 2 threads
    python benchmarks/bench_preview.py --checkpoint DIR --rounds 20
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from mammosynth.pipelines.checkpoint import DEFAULT_CHECKPOINT

    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    from playwright import sync_api

    from mammosynth.ui.services import AppConfig
    from mammosynth.ui.testing import serve_app

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    demo, url, services = serve_app(AppConfig(checkpoint=Path(args.checkpoint), work_dir=work, temp_dir=work / "tmp"),
                                    start_demo=False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_label(re.compile("username", re.I)).fill("admin")
            page.get_by_label(re.compile("password", re.I)).fill("admin")
            page.get_by_role("button", name=re.compile("login", re.I)).click()
            page.locator("#app-user").get_by_text(re.compile("Logged in as")).wait_for()

            def src() -> str | None:
                images = page.locator("#gen-preview img")
                return images.first.get_attribute("src") if images.count() else None

            def timed(action) -> float:
                before = src()
                start = time.perf_counter()
                action()
                while src() in (None, before):
                    page.wait_for_timeout(2)
                    if time.perf_counter() - start > 60:
                        raise RuntimeError("the preview did not refresh within 60 s; it says: "
                                           + page.locator("#gen-preview-note").inner_text())
                return time.perf_counter() - start

            box = page.locator("#gen-box textarea, #gen-box input").first
            # a lesion, so that the box matters; the first preview also loads the model
            timed(lambda: page.get_by_role("button", name="Suspicious mass · L-MLO").click())
            results: dict[str, list[float]] = {"view": [], "side": [], "box typed": []}
            for i in range(args.rounds):
                results["view"].append(timed(lambda: page.locator("#gen-view").get_by_label(
                    "CC" if i % 2 == 0 else "MLO").check()))
                results["side"].append(timed(lambda: page.locator("#gen-laterality").get_by_label(
                    "R" if i % 2 == 0 else "L").check()))
                results["box typed"].append(timed(lambda: box.fill(
                    "0.20,0.20,0.45,0.40" if i % 2 == 0 else "0.40,0.45,0.65,0.70")))
            notes = page.locator("#gen-preview-note").inner_text()
            browser.close()
    finally:
        demo.close()
    print(f"checkpoint {args.checkpoint}; {args.threads} threads; {args.rounds} rounds; last note: {notes}")
    print("| change | min (ms) | median (ms) | max (ms) |")
    print("|---|---|---|---|")
    for name, times in results.items():
        print(f"| {name} | {min(times) * 1000:.0f} | {statistics.median(times) * 1000:.0f} | {max(times) * 1000:.0f} |")
    every = [t for times in results.values() for t in times]
    print(f"all: median {statistics.median(every) * 1000:.0f} ms, "
          f"{sum(t <= 0.3 for t in every)}/{len(every)} within 0.3 s")


if __name__ == "__main__":
    main()
