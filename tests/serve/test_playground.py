"""The playground: its endpoints through HTTP, and its page in a real browser (headless Chromium via Selenium)
against a real ``unmask serve`` on a free port."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from unmask.decoding.policies import REGISTRY
from unmask.eval.spec import parse_spec
from unmask.models.cache import CACHE_KINDS
from unmask.serve.app import ServerSettings

from .conftest import API_KEY, start_server

PROMPT = "Tom has 3 boxes with 4 pens in each. How many pens does Tom have?"
# the README's screenshot is refreshed by: UNMASK_SCREENSHOT=docs/playground.png pytest tests/serve/test_playground.py
SCREENSHOT_ENV = "UNMASK_SCREENSHOT"


def stream(server, body: dict, key: str | None = API_KEY) -> tuple[int, list[dict] | dict]:
    """POST to the playground stream: (status, the events) or (status, the error body)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.stream("POST", server.url + "/v1/playground/stream", json=body, headers=headers, timeout=300) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()
        assert r.headers["content-type"].startswith("text/event-stream")
        return 200, [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def generated(lm, spec: str, gen_length: int, block_length: int, prompt: str = PROMPT):
    """``generate`` for the same prompt and spec: (answer text, forwards)."""
    out = lm.generate(prompt, gen_length=gen_length, block_length=block_length, **parse_spec(spec).generate_kwargs())
    return lm.answer_text(out.tokens[0]), int(out.nfe_per_row[0])


def test_page_and_assets_are_served(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/playground/app.js">' in page.text and "http" not in page.text.split("<body>")[1]
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = httpx.get(server.url + f"/playground/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and len(r.content) > 500
    assert httpx.get(server.url + "/playground/secret.py").status_code == 404


def test_options_list_every_policy_and_cache_mode(server):
    options = httpx.get(server.url + "/v1/playground/options", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert [p["name"] for p in options["policies"]] == list(REGISTRY)
    assert [c["name"] for c in options["caches"]] == list(CACHE_KINDS)
    for spec in options["compare"]:
        parse_spec(spec)
    assert httpx.get(server.url + "/v1/playground/options").status_code == 401


@pytest.mark.parametrize("spec", ["threshold:0.9+credit@dual", "frechet@prefix"])
def test_stream_replays_the_decode_of_generate(server, lm, spec):
    """The step events commit every position once, forward by forward; the final text and forwards are
    ``generate``'s for the same prompt and spec."""
    status, events = stream(server, {"prompt": PROMPT, "spec": spec, "gen_length": 64, "block_length": 32})
    assert status == 200
    start, steps, done = events[0], events[1:-1], events[-1]
    assert start["type"] == "start" and start["gen_length"] == 64 and start["block_length"] == 32
    assert all(e["type"] == "step" for e in steps) and done["type"] == "done"
    assert [e["forward"] for e in steps] == list(range(1, len(steps) + 1))
    positions = [c["pos"] for e in steps for c in e["commits"]]
    assert len(positions) == len(set(positions)) and set(positions) <= set(range(64))
    assert all(0 <= c["conf"] <= 1 and isinstance(c["id"], int) for e in steps for c in e["commits"])
    text, forwards = generated(server.lm, spec, 64, 32)
    assert done["text"] == text and done["forwards"] == forwards == len(steps)


@pytest.mark.parametrize("body,param,fragment", [
    ({"prompt": PROMPT, "spec": "nosuch:3"}, None, "unknown policy"),
    ({"prompt": "   ", "spec": "topk"}, None, "empty"),
    ({"prompt": PROMPT, "gen_length": 40, "block_length": 32}, "gen_length", "multiple of block_length"),
    ({"prompt": PROMPT, "gen_length": 4096}, "gen_length", "[1, 1024]"),
    ({"prompt": PROMPT, "spec": "threshold:1.5"}, None, "threshold"),
])
def test_bad_requests_are_answered_400(server, body, param, fragment):
    status, error = stream(server, body)
    assert status == 400, error
    assert fragment in error["error"]["message"]
    if param:
        assert error["error"]["param"] == param


def test_stream_needs_the_api_key(server):
    assert stream(server, {"prompt": PROMPT}, key=None)[0] == 401


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; skipped where none is installed, unless UNMASK_REQUIRE_BROWSER (set by CI) asks for it."""
    found = chromium()
    if found is None:
        if os.environ.get("UNMASK_REQUIRE_BROWSER"):
            pytest.fail("UNMASK_REQUIRE_BROWSER is set but no chromium + chromedriver is on PATH")
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=found[1]), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def open_server(lm):
    """The server as ``unmask playground`` runs it: no API key."""
    uv, thread, url = start_server(lm, ServerSettings(spec="threshold:0.9@dual"), max_batch=4, max_queue=16)
    yield url
    uv.should_exit = True
    thread.join(timeout=30)


def wait_for(driver, condition, timeout: float = 240):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def test_the_page_decodes_two_specs_side_by_side(browser, open_server, lm, tmp_path):
    """Load the page, run topk and threshold+credit on one prompt: each column's canvas fills in, its final text
    equals ``generate``'s, its forwards counter equals the NFE; then a bad spec shows the server's error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(1280, 800)
    browser.get(open_server + "/")
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 30)
    assert not browser.find_element(By.ID, "key-row").is_displayed()  # no key needed here
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys(PROMPT)
    length = browser.find_element(By.ID, "gen-length")
    length.clear()
    length.send_keys("64")
    columns = [browser.find_element(By.ID, "col-a"), browser.find_element(By.ID, "col-b")]
    specs = ["topk", "threshold:0.9+credit@dual"]
    for column, spec in zip(columns, specs, strict=True):
        assert column.find_element(By.CLASS_NAME, "spec-text").get_attribute("value") == spec
    # the pickers write the spec: topk's column gets credit by a click, then loses it again
    credit = columns[0].find_element(By.CLASS_NAME, "credit")
    credit.click()
    assert columns[0].find_element(By.CLASS_NAME, "spec-text").get_attribute("value") == "topk+credit"
    credit.click()
    assert columns[0].find_element(By.CLASS_NAME, "spec-text").get_attribute("value") == "topk"

    prompt.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard runs it
    wait_for(browser, lambda d: all(c.get_attribute("data-state") in ("done", "error") for c in columns))
    for column, spec in zip(columns, specs, strict=True):
        assert column.get_attribute("data-state") == "done", column.find_element(By.CLASS_NAME, "column-error").text
        text, forwards = generated(lm, spec, 64, 32)
        assert column.find_element(By.CLASS_NAME, "text").get_attribute("textContent") == text
        assert int(column.find_element(By.CLASS_NAME, "forwards").text) == forwards
        cells = column.find_elements(By.CSS_SELECTOR, ".canvas .cell")
        done = column.find_elements(By.CSS_SELECTOR, ".canvas .cell.done")
        assert len(cells) == 64 and len(done) >= 1
        assert max(int(c.get_attribute("data-forward")) for c in done) == forwards
    assert browser.find_element(By.ID, "run").is_enabled() and not browser.find_element(By.ID, "stop").is_enabled()
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "playground.png")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000  # the whole page
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    bad = columns[1].find_element(By.CLASS_NAME, "spec-text")
    bad.clear()
    bad.send_keys("threshold:7")
    browser.find_element(By.ID, "run").click()
    wait_for(browser, lambda d: columns[1].get_attribute("data-state") == "error", 60)
    error = columns[1].find_element(By.CLASS_NAME, "column-error")
    assert error.is_displayed() and error.text.startswith("400:") and "threshold" in error.text
    wait_for(browser, lambda d: columns[0].get_attribute("data-state") == "done")


def test_a_run_can_be_stopped(browser, open_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(open_server + "/")
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 30)
    browser.find_element(By.ID, "compare").click()  # one column
    length = browser.find_element(By.ID, "gen-length")
    length.clear()
    length.send_keys("1024")
    column = browser.find_element(By.ID, "col-a")  # topk over 1024 positions: long enough to stop midway
    browser.find_element(By.ID, "run").click()
    wait_for(browser, lambda d: int(column.find_element(By.CLASS_NAME, "forwards").text) >= 2, 120)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_for(browser, lambda d: column.get_attribute("data-state") == "stopped", 30)
    assert browser.find_element(By.ID, "run").is_enabled()
    assert browser.find_element(By.ID, "col-b").get_attribute("data-state") == "idle"


def test_phone_width_stacks_the_columns(browser, open_server):
    """At a phone's width the two columns stack and nothing scrolls sideways."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 844)
    try:
        browser.get(open_server + "/")
        wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 30)
        a, b = browser.find_element(By.ID, "col-a"), browser.find_element(By.ID, "col-b")
        assert b.location["y"] >= a.location["y"] + a.size["height"]
        width = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    finally:
        browser.set_window_size(1280, 800)


def test_a_server_with_a_key_asks_for_it(browser, server):
    """Against ``unmask serve --api-key`` the page shows the 401 and a key field; the key unlocks it."""
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(server.url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "key-row").is_displayed(), 30)
    assert "401" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    browser.find_element(By.ID, "use-key").click()
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 30)
    assert not browser.find_element(By.ID, "key-row").is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#col-a .policy option")) == len(REGISTRY)


def test_pickers_keep_a_policys_options(browser, open_server):
    """A spec typed with a policy's further options sets the pickers; the pickers keep the options."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(open_server + "/")
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 30)
    column = browser.find_element(By.ID, "col-a")
    spec = column.find_element(By.CLASS_NAME, "spec-text")
    spec.clear()
    spec.send_keys("klass:0.6(kl=0.02)", Keys.TAB)  # change event
    assert column.find_element(By.CLASS_NAME, "policy").get_attribute("value") == "klass"
    assert column.find_element(By.CLASS_NAME, "knob").get_attribute("value") == "0.6"
    assert "kl=0.01" in column.find_element(By.CLASS_NAME, "knob").get_attribute("title")
    column.find_element(By.CLASS_NAME, "credit").click()
    assert spec.get_attribute("value") == "klass:0.6(kl=0.02)+credit"


def test_stream_reports_what_a_revocable_policy_takes_back(server):
    """WINO re-masks drafts: the step events name them, and replaying commits and re-masks gives the answer."""
    status, events = stream(server, {"prompt": PROMPT, "spec": "wino:0.3", "gen_length": 64, "block_length": 32})
    assert status == 200
    canvas: dict[int, int] = {}
    for e in events[1:-1]:
        for pos in e["remasked"]:
            canvas.pop(pos)
        for c in e["commits"]:
            canvas[c["pos"]] = c["id"]
    assert all(isinstance(e["remasked"], list) for e in events[1:-1])
    assert sum(len(e["remasked"]) for e in events[1:-1]) > 0, "WINO took nothing back on this prompt"
    text = server.lm.tokenizer.decode([canvas[p] for p in sorted(canvas)], skip_special_tokens=True)
    assert events[-1]["type"] == "done" and events[-1]["text"] == generated(server.lm, "wino:0.3", 64, 32)[0]
    assert events[-1]["text"].startswith(text.strip()[:10])
