"""The chat page (GET /) in a real headless Chromium driven by Selenium: a streamed reply, multi-turn history, the
stop button, an error shown when the server refuses, no console errors; a screenshot is saved.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver); skipped without
(failed without under CI=true, which installs them).
The screenshot goes to $TINYGPT_SCREENSHOT_DIR when set, else the test's tmp_path.
"""
import os
import shutil
import time
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from live_server import reference_text, start_server, tiny_checkpoint  # noqa: E402,F401

from gpt.serve.prompts import render_chat  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(autouse=True, scope="module")
def _browser_installed():
    """Skip with the reason where no browser is installed; under CI (which installs it) a missing one fails."""
    if not (CHROMIUM and DRIVER):
        msg = "no chromium + chromedriver installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def page(tiny_checkpoint):
    from selenium.webdriver.chrome.service import Service

    server = start_server(tiny_checkpoint, delay=0.03)   # 30 ms a step: the reply visibly streams
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,700"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        driver.get(server.url + "/")
        yield driver, server
    finally:
        driver.quit()
        server.stop()


def _wait(predicate, seconds=30.0):
    """Poll `predicate` every 20 ms for at most `seconds` (bounded); return its last value."""
    deadline = time.monotonic() + seconds
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(0.02)
        value = predicate()
    return value


def _send(driver, text):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def _answers(driver, streaming=False):
    """The assistant messages' texts, read in one script (no element can go stale between find and read)."""
    css = ".msg.assistant.streaming" if streaming else ".msg.assistant"
    return driver.execute_script(f"return [...document.querySelectorAll('{css}')].map(a => a.textContent)")


def test_type_send_and_see_the_reply_stream_in(page, tiny_checkpoint, tmp_path):
    from selenium.webdriver.common.by import By

    driver, server = page
    assert _wait(lambda: driver.find_element(By.ID, "model").text.startswith("tiny"))
    for field, value in (("temperature", "0"), ("max-tokens", "24")):
        el = driver.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    _send(driver, "Say hello")
    # while streaming: part of the answer is shown, with the streaming class, and the stop button is enabled
    partial = _wait(lambda: [a for a in _answers(driver, streaming=True) if a])
    assert partial and driver.find_element(By.ID, "stop").is_enabled()
    assert _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, ".msg.streaming"))
    want, _ = reference_text(tiny_checkpoint, list(render_chat([{"role": "user", "content": "Say hello"}]).encode()),
                             24)
    got = driver.execute_script("return document.querySelector('.msg.assistant').textContent")
    assert got == want and len(partial[0]) < len(want)
    assert driver.execute_script("return turns.length") == 2   # the question and its answer
    # a second turn sends the whole history: the reply equals the Alpaca prompt of both turns decoded alone
    _send(driver, "And again")
    assert _wait(lambda: len(_answers(driver)) == 2 and not driver.find_elements(By.CSS_SELECTOR, ".msg.streaming"))
    turns = [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": want},
             {"role": "user", "content": "And again"}]
    second = driver.execute_script("return document.querySelectorAll('.msg.assistant')[1].textContent")
    assert second == reference_text(tiny_checkpoint, list(render_chat(turns).encode()), 24)[0]
    shot = Path(os.environ.get("TINYGPT_SCREENSHOT_DIR") or tmp_path) / "serve_chat_page.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_stop_button_ends_the_stream_and_frees_the_row(page):
    from selenium.webdriver.common.by import By

    driver, server = page
    driver.find_element(By.ID, "clear").click()
    el = driver.find_element(By.ID, "max-tokens")
    el.clear()
    el.send_keys("300")
    _send(driver, "Tell a long story")
    assert _wait(lambda: any(_answers(driver)))
    driver.find_element(By.ID, "stop").click()
    assert _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, ".msg.streaming"))
    assert _wait(lambda: server.served.engine.stats()["running"] == 0, 10)   # 300 tokens would take 9 s
    assert server.served.engine.stats()["cancelled"] >= 1
    assert driver.find_element(By.ID, "send").is_enabled() and not driver.find_element(By.ID, "stop").is_enabled()
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_refused_request_shows_the_servers_error(page):
    from selenium.webdriver.common.by import By

    driver, _ = page
    driver.find_element(By.ID, "clear").click()  # alone: the earlier tests' conversation may not fit the context
    el = driver.find_element(By.ID, "max-tokens")
    el.clear()
    el.send_keys("100000")
    _send(driver, "Too much")
    error = driver.find_element(By.ID, "error")
    assert _wait(lambda: error.is_displayed())
    assert error.text.startswith("400: max_tokens=100000 plus the conversation's ")
    assert driver.find_element(By.ID, "send").is_enabled()
