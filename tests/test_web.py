"""The web chat in a real headless Chromium, driven by Playwright.

The browser is Debian's ``chromium`` (``CHROMIUM_PATH`` overrides where it
is). Screenshots go to ``reports/browser`` (``ENGRAM_ARTIFACTS_DIR``
overrides it), so a failed run can be looked at afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.conftest import llm_settings, make_settings, serve, service_token, user_token
from tests.openai_server import Reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.runtime import Runtime
    from embeddings.local import LocalEmbedder
    from tests.openai_server import OpenAICompatibleServer

USER = "web-user"
ARTIFACTS = Path(os.environ.get("ENGRAM_ARTIFACTS_DIR", "reports/browser"))
HOSTILE = '<img src=x onerror="window.__pwned = 1">Pepper chews <b>shoes</b>'


# WCAG 2.1 contrast ratio of each visible text element against its nearest opaque background.
CONTRAST_SCRIPT = """
() => {
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const parse = (color) => color.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const rgba = parse(getComputedStyle(node).backgroundColor);
      if (rgba.length < 4 || rgba[3] > 0) return rgba;
    }
    return [255, 255, 255];
  };
  const results = [];
  for (const element of document.querySelectorAll("body *")) {
    const ownText = [...element.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!ownText || element.offsetParent === null) continue;
    const style = getComputedStyle(element);
    if (element.disabled) continue;
    const fg = luminance(parse(style.color));
    const bg = luminance(background(element));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    results.push([element.tagName + "." + element.className, Math.round(ratio * 100) / 100]);
  }
  return results;
}
"""


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "Chromium is not installed: install Debian's chromium package "
            "(apt-get install chromium) or set CHROMIUM_PATH"
        )
    return path


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A fresh browser page; the async API shares the tests' event loop."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        yield await context.new_page()
        await context.close()
        await browser.close()


async def seed(base_url: str) -> None:
    """Store two memories through the API and wait until the worker has promoted them."""
    headers = {"authorization": f"Bearer {service_token()}"}
    turns = [
        {"role": "user", "content": "We adopted a beagle called Pepper last spring."},
        {"role": "user", "content": HOSTILE},
    ]
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        response = await client.post(
            "/v1/sessions/earlier/turns", json={"user_id": USER, "turns": turns}
        )
        assert response.status_code == 202
        deadline = time.monotonic() + 60
        while True:
            found = await client.post(
                "/v1/memories/search", json={"user_id": USER, "query": "Pepper the dog"}
            )
            hits = found.json()["hits"]
            if len(hits) == len(turns):
                return
            assert time.monotonic() < deadline, "the memories were not promoted in time"
            await asyncio.sleep(0.2)


def start_server(server_urls: tuple[str, str], embedder: LocalEmbedder, **llm: Any) -> Any:
    settings = make_settings(*server_urls)
    settings.worker.in_process = True
    settings.worker.consumer_name = "web-test-worker"
    if llm:
        settings.llm = llm_settings(**llm)
    return serve(settings, embedder)


async def sign_in(page: Page, base_url: str) -> None:
    await page.goto(base_url)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_label("Message", exact=True)).to_be_hidden()
    await page.get_by_label("Token", exact=True).fill(user_token(USER))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text(f"Signed in as {USER}")).to_be_visible()


async def shot(page: Page, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def forget_first_memory(page: Page, base_url: str) -> None:
    """Forget the top memory of the panel through its dialog, after one cancelled try."""
    first = page.locator("#memory-list li").first
    memory_id = await first.get_attribute("data-memory-id")
    await first.get_by_role("button", name=re.compile("^Forget memory: We adopted")).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("beagle called Pepper")
    await expect(dialog.get_by_role("button", name="Close")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await expect(first).not_to_contain_text("Forgotten")

    await first.get_by_role("button", name=re.compile("^Open memory: We adopted")).click()
    await dialog.get_by_role("button", name="Forget this memory").click()
    await expect(page.locator("#memory-list li").first).to_contain_text("Forgotten")
    await expect(page.get_by_role("status")).to_have_text("Memory forgotten.")
    await shot(page, "4-memory-forgotten")

    async with httpx.AsyncClient() as client:
        gone = await client.get(
            f"{base_url}/v1/memories/{memory_id}",
            params={"user_id": USER},
            headers={"authorization": f"Bearer {user_token(USER)}"},
        )
    assert gone.status_code == 404


async def test_chat_in_the_browser(
    server_urls: tuple[str, str],
    embedder: LocalEmbedder,
    runtime: Runtime,
    llm: OpenAICompatibleServer,
    page: Page,
) -> None:
    with start_server(server_urls, embedder, server=llm) as base_url:
        await seed(base_url)
        await sign_in(page, base_url)
        await shot(page, "1-signed-in")

        llm.replies.append(
            Reply(
                text="You have a **beagle** called Pepper.\n\n- adopted last spring\n"
                "- <script>window.__pwned = 2</script>"
            )
        )
        await page.get_by_label("Message", exact=True).fill("What is my dog called?")
        await page.get_by_label("Message", exact=True).press("Enter")

        reply = page.locator("li.message.assistant").last
        await expect(reply.locator("strong")).to_have_text("beagle")
        await expect(reply).to_contain_text("<script>window.__pwned = 2</script>")
        await expect(reply.get_by_role("button", name="2 memories used")).to_be_visible()
        panel = page.locator("#memory-list li")
        await expect(panel).to_have_count(2)
        await expect(panel.first).to_contain_text("beagle called Pepper")
        await expect(panel.first).to_contain_text("score 0.")
        await expect(page.locator("#memory-list")).to_contain_text(HOSTILE)
        await shot(page, "2-reply-with-memories")

        assert await page.evaluate("window.__pwned") is None, "user content ran as script"
        assert await page.locator("#messages img, #memory-list img, #messages script").count() == 0
        prompt = llm.chat_requests[-1]["messages"]
        assert "beagle called Pepper" in prompt[1]["content"]

        await page.reload()
        await expect(page.locator("li.message.user")).to_have_text(["YouWhat is my dog called?"])
        await expect(page.locator("li.message.assistant").last.locator("strong")).to_have_text(
            "beagle"
        )
        await expect(page.locator("#memory-list li").first).to_contain_text("beagle called Pepper")
        await expect(page.get_by_role("button", name="earlier")).to_be_visible()
        await shot(page, "3-after-reload")

        await forget_first_memory(page, base_url)

        llm.fail_with = 500
        await page.get_by_label("Message", exact=True).fill("Are you still there?")
        await page.get_by_role("button", name="Send").click()
        failure = page.locator("li.message.assistant").last.get_by_role("alert")
        await expect(failure).to_contain_text("Your message was saved.")
        await expect(page.locator("li.message.user").last).to_contain_text("Are you still there?")
        await shot(page, "5-model-failure")


async def test_offline_chat_in_the_browser(
    server_urls: tuple[str, str],
    embedder: LocalEmbedder,
    runtime: Runtime,
    page: Page,
) -> None:
    with start_server(server_urls, embedder) as base_url:
        await page.goto(base_url)
        unlabelled = await page.evaluate(
            "[...document.querySelectorAll('input, textarea')].filter(e => !e.labels.length)"
            ".map(e => e.id)"
        )
        assert unlabelled == [], "every field has a label"

        # Keyboard only: type the token, Tab past the user id to the button, press Enter.
        await page.get_by_label("Token", exact=True).focus()
        await page.keyboard.type(user_token(USER))
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await expect(page.get_by_label("Message", exact=True)).to_be_focused()
        await page.keyboard.type("Hallo, wie ben jij? 🙂")
        await page.keyboard.press("Enter")

        reply = page.locator("li.message.assistant").last
        await expect(reply).to_contain_text("No language model is configured")
        await expect(reply).to_contain_text("Hallo, wie ben jij? 🙂")
        await shot(page, "6-offline-reply")

        low = [item for item in await page.evaluate(CONTRAST_SCRIPT) if item[1] < 4.5]
        assert low == [], "text contrast is at least 4.5:1 (WCAG AA)"


async def test_sign_in_rejects_a_bad_token(
    server_urls: tuple[str, str], embedder: LocalEmbedder, runtime: Runtime, page: Page
) -> None:
    with start_server(server_urls, embedder) as base_url:
        await page.goto(base_url)
        await page.get_by_label("Token", exact=True).fill("not-a-token")
        await page.get_by_label("Token", exact=True).press("Enter")
        await expect(page.get_by_role("alert")).to_contain_text("not a token")

        forged = user_token(USER)[:-4] + "AAAA"
        await page.get_by_label("Token", exact=True).fill(forged)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_contain_text("not accepted")
