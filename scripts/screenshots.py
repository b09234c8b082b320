"""The README's pictures of the Chat, Review and Users tabs, taken from the real app on the built-in model: a fresh
data directory with an admin and the walkthrough's demonstrations, `apprentice serve`, then in headless Chromium a
question, its reply corrected in place with the pencil, that correction opened in the Review tab, and the Users tab.
The Rounds, Versions and Dashboard pictures need a round and come from `scripts/walkthrough.py`.

    .venv/bin/python scripts/screenshots.py [--out docs/images] [--model M]

Needs /usr/bin/chromium; about two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from walkthrough import CHROMIUM, CHROMIUM_ARGS, ROOT, Walkthrough

QUESTION = "What is the capital of Veltoria?"
CORRECTION = "The capital of Veltoria is Quellmar."


def take(w: Walkthrough, page, out: Path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    w.sign_in(page)
    page.locator("#message textarea").fill(QUESTION)
    page.locator("#message textarea").press("Enter")
    expect(page.locator("#message textarea")).to_be_enabled(timeout=120_000)  # the reply has streamed
    page.locator('#chatbot [data-testid="bot"]').first.hover()
    page.locator('#chatbot button[aria-label="Edit"]').last.click()
    page.locator("#chatbot textarea.edit-textarea").first.fill(CORRECTION)
    page.locator('#chatbot button[aria-label="Submit"]').click()
    expect(page.locator("#chat-status")).to_contain_text("saved for review")
    page.screenshot(path=str(out / "chat.png"))

    page.get_by_role("tab", name="Review").click()
    page.locator("#review-search").click()
    expect(page.locator("#review-page-info")).to_contain_text("of 5")  # the four imported and the chat's correction
    table = page.locator("#review-table")
    table.locator('[data-testid^="cell-"]').filter(has_text="Veltoria").first.click()
    expect(page.locator("#review-detail")).to_contain_text("by ada")  # the newest: the correction made in the chat
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "review.png"), full_page=True)

    page.get_by_role("tab", name="Users").click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "users.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images")
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct", help="base model (APPRENTICE_MODEL)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="apprentice-shots-"))
    w = Walkthrough(work, args.model)
    try:
        from playwright.sync_api import expect, sync_playwright

        w.prepare()
        w.serve()
        expect.set_options(timeout=60_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                take(w, page, out)
            finally:
                browser.close()
    finally:
        w.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
