"""The page of ``rnnlab serve`` in headless Chromium: microphone (a fake device playing a WAV file) over the WebSocket,
keywords, slots, G2P, a file and the look-inside plots; ends with a screenshot of the whole page (kept in the test's
temporary folder; docs/img/serve.png is the same page over the shipped models)."""

import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from modules.streaming import StreamingTranscriber
from pipelines.serve import create_app
from tests.unit.pipelines.serve.helpers import (
    RATE,
    FakeKeywords,
    live_server,
    speechlike,
    tiny_ctc,
    tiny_g2p,
    trained_slots,
)

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("browser")
    audio = tmp / "speech.wav"
    sf.write(audio, speechlike(3.0, 11).numpy(), RATE, subtype="PCM_16")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={audio}", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 15.0):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        if time.monotonic() > deadline:
            errors = driver.execute_script("return window.rnnlab && window.rnnlab.errors;")
            raise AssertionError(f"timed out waiting for {script} (page errors: {errors})")
        time.sleep(0.1)


def text_of(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent;")


def record(driver, mode: str, seconds: float, until: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    finals = driver.execute_script("return window.rnnlab.finals.length;")
    driver.find_element(By.ID, "record").click()
    wait_for(driver, "!document.getElementById('stop').disabled")
    if until:
        wait_for(driver, until)
    time.sleep(seconds)
    driver.find_element(By.ID, "stop").click()
    wait_for(driver, f"window.rnnlab.finals.length > {finals}")


def test_the_page_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    t0 = time.monotonic()
    stream, slots, g2p = tiny_ctc(bidirectional=False, seed=1), trained_slots(), tiny_g2p()
    models = {"asr": tiny_ctc(bidirectional=True), "stream": stream, "keywords": FakeKeywords("yes", 0.99),
              "slots": slots, "g2p": g2p}
    for role, model in models.items():  # how the page names them (as a checkpoint's file name)
        model.rnnlab_source = f"tiny-{role}.ckpt" if role != "keywords" else "always-yes"
    with live_server(create_app(models)) as port:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(browser, "window.rnnlab && window.rnnlab.ready")
        assert browser.title == "rnnlab"
        options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#mode option")]
        assert options == ["asr", "keywords"]

        # Keywords: the fake classifier says "yes" (0.99) from the first full window on.
        record(browser, "keywords", 0.5, until="window.rnnlab.keywords.length > 0")
        assert "lit" in browser.find_element(By.ID, "kw-yes").get_attribute("class")
        assert text_of(browser, "keyword").startswith("yes (0.99 at 1.00 s)")
        assert browser.execute_script("return window.rnnlab.lastFinal;") == "yes"

        # Slots: coloured spans and the intent.
        box = browser.find_element(By.ID, "slots-input")
        box.clear()
        box.send_keys("i want to fly from boston to denver")
        browser.find_element(By.ID, "slots-go").click()
        wait_for(browser, "document.querySelectorAll('#slots-out .span').length === 2")
        spans = browser.find_elements(By.CSS_SELECTOR, "#slots-out .span")
        assert [(s.get_attribute("data-slot"), s.text.split("\n")[0]) for s in spans] == [
            ("fromloc.city_name", "boston"), ("toloc.city_name", "denver")]
        assert text_of(browser, "slots-intent") == "intent: atis_flight"

        # G2P.
        word = browser.find_element(By.ID, "g2p-input")
        word.clear()
        word.send_keys("cat")
        browser.find_element(By.ID, "g2p-go").click()
        expected = g2p.pronounce(["cat"])[0]
        wait_for(browser, f"document.getElementById('g2p-out').textContent === {expected!r}")

        # A file: its transcript with the real-time factor, then a look inside.
        clip = tmp_path / "clip.wav"
        wav = speechlike(1.5, 12)
        sf.write(clip, wav.numpy(), RATE, subtype="PCM_16")
        browser.find_element(By.ID, "file-input").send_keys(str(clip))
        wait_for(browser, "document.getElementById('file-out').textContent.includes('RTF')")
        text = models["asr"].transcribe_waveforms([torch.from_numpy(sf.read(clip, dtype="float32")[0])])[0]
        assert text_of(browser, "file-out").startswith(f"{text}clip.wav · 1.50 s of audio · RTF")
        wait_for(browser, "window.rnnlab.inspected >= 1")

        # The microphone: partial text while recording, then the final text, which is what the server's
        # streaming transcriber gives for exactly the audio the page sent.
        record(browser, "asr", 2.5)
        state = browser.execute_script("return window.rnnlab;")
        final = state["lastFinal"]
        sent = torch.tensor(state["lastRecording"]["samples"], dtype=torch.float32) / 32768.0
        assert state["lastRecording"]["rate"] == RATE and sent.numel() >= 1.5 * RATE
        assert state["samplesSent"] >= sent.numel() and state["partials"] >= 1 and state["errors"] == []
        st = StreamingTranscriber(stream)
        st.accept(sent)
        assert final == st.finish() and final
        assert text_of(browser, "transcript") == final
        inspected = wait_for(browser, "window.rnnlab.inspected >= 2 && window.rnnlab.lastInspect")
        assert inspected["text"] == final and inspected["gates"] is True
        assert inspected["frames"] == stream.model.output_lengths(torch.tensor([sent.numel()])).item()

        height = browser.execute_script("return document.documentElement.scrollHeight;")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the whole page in one screenshot
            "width": 1280, "height": min(height, 3000), "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)
        shot = tmp_path / "serve.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    assert time.monotonic() - t0 < 60
