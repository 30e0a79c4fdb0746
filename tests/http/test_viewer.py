"""The viewer in a real browser: Debian's headless Chromium (installed by scripts/test.sh),
driven by Playwright for Python, against ``segmentlog serve`` in a subprocess while a writer
process appends. Playwright's own browser downloads are never used.

One scenario, in the order a person would see it: open the page with a token, choose the
run, watch events appended by another process arrive, see hostile event text shown as text,
then survive a server restart (with events appended while it was down) without a gap or a
repeat, until the run finishes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.http.conftest import ServeProcess, Writer, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "viewer-token"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
WAIT_MS = 20_000


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test.sh (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


def shown_seqs(page: Page) -> list[int]:
    seqs: list[int] = page.eval_on_selector_all(
        "#events li.event", "items => items.map(li => Number(li.dataset.seq))"
    )
    return seqs


def wait_for_seq(page: Page, seq: int) -> None:
    page.wait_for_selector(f'#events li.event[data-seq="{seq}"]', timeout=WAIT_MS)


def test_viewer_shows_live_events_as_text_and_survives_a_server_restart(
    tmp_path: Path,
    browser: BrowserContext,
    writers: Callable[..., Writer],
    serve_processes: Callable[..., ServeProcess],
) -> None:
    run_id = uuid.uuid4()
    log_dir = tmp_path / "log"
    writer = writers(run_id, "--dir", str(log_dir))
    assert writer.do("start", "deltas 5") == 6
    port = free_port()
    server = serve_processes(log_dir, "--token", TOKEN, port=port)

    page = browser.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{server.url}/?token={TOKEN}")
    assert "token" not in page.url  # the viewer took the token out of the address bar
    page.click(f'button.run[data-run-id="{run_id}"]', timeout=WAIT_MS)
    wait_for_seq(page, 6)
    page.wait_for_selector('#state[data-state="live"]', timeout=WAIT_MS)

    # Appended by another process while the page watches.
    assert writer.do("deltas 5 0.01") == 11
    wait_for_seq(page, 11)

    # Hostile text is shown as the characters it is, and its script never runs.
    assert writer.do("text " + json.dumps(HOSTILE)) == 12
    wait_for_seq(page, 12)
    assert page.text_content('#events li.event[data-seq="12"] .text') == HOSTILE
    assert page.locator("#events img").count() == 0
    assert page.title() == "segmentlog viewer"

    # Restart the server; the run goes on meanwhile.
    assert server.stop() == 0
    page.wait_for_selector('#state[data-state="reconnecting"]', timeout=WAIT_MS)
    assert writer.do("deltas 5") == 17  # while no server is up
    serve_processes(log_dir, "--token", TOKEN, port=port)
    assert writer.do("deltas 5 0.01", "end") == 23
    wait_for_seq(page, 23)
    page.wait_for_selector('#state[data-state="finished"]', timeout=WAIT_MS)

    assert shown_seqs(page) == list(range(1, 24)), "every seq once, in order, across the restart"
    assert page.text_content('#events li.event[data-seq="23"] .type') == "RunCompleted"
    assert page.title() == "segmentlog viewer"
    assert script_errors == []
