"""fastst serve in a real headless Chromium (Selenium + the distribution's chromium and chromedriver).

`.ci/run` installs them (apt: chromium chromium-driver). Without them these tests skip and say why.
The page's ``document.body.dataset.state`` (loading | idle | running | done | error) is what they wait on.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("starlette", reason="fastst serve needs the .[serve] extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="fastst serve needs the .[serve] extra (starlette, uvicorn)")
pytest.importorskip("selenium", reason="the browser tests need selenium (in the .[dev] extra)")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from fastst.serve import command  # noqa: E402
from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models  # noqa: E402
from tests.conftest import synthetic_image  # noqa: E402
from tests.serve.test_serve import LiveServer, make_model_file  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
UPLOAD_LIMIT = 200_000  # bytes, small so that the page's own size check can be tested


def find_browser() -> tuple[str, str]:
    """(browser, chromedriver) paths; skip with the reason when either is missing."""
    browser = os.environ.get("FASTST_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("FASTST_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "no headless browser here: install chromium and chromedriver (Debian/Ubuntu: apt-get install chromium "
            "chromium-driver; .ci/run does) or set FASTST_CHROMIUM and FASTST_CHROMEDRIVER"
        )
    return browser, driver


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    binary, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    service = webdriver.ChromeService(executable_path=driver_path)  # an explicit driver: no Selenium Manager download
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as e:
        pytest.skip(f"chromium at {binary} did not start under chromedriver {driver_path}: {e.msg}")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_models")
    make_model_file(root / "waves.safetensors", "tiny_waves", seed=0, steps=123)
    make_model_file(root / "dots.safetensors", "tiny_dots", seed=1, steps=456)
    app = create_app(
        load_models([root], device="cpu"),
        Limits(max_upload_bytes=UPLOAD_LIMIT, default_size=256),
        allowed_hosts=command.LOOPBACK_HOSTS,  # as fastst serve runs it on 127.0.0.1
    )
    live = LiveServer(app)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser_photos")
    synthetic_image(7, (320, 240)).save(root / "holiday photo.jpg", quality=92)
    (root / "notes.jpg").write_bytes(b"these are my notes, not a photo\n" * 20)
    Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3)).save(root / "huge.png")  # noise: ~360 kB
    return {p.stem: p for p in root.iterdir()}


def state(browser) -> str:
    return browser.execute_script("return document.body.dataset.state")


def wait_for_state(browser, *states: str, timeout: float = 60) -> str:
    try:
        WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda d: state(d) in states)
    except TimeoutException:
        error = browser.find_element(By.ID, "error").text
        raise AssertionError(f"page state {state(browser)!r}, waited for {states}; error box: {error!r}") from None
    return state(browser)


def open_page(browser, server) -> None:
    browser.get(server.url + "/")
    wait_for_state(browser, "idle")


def choose_photo(browser, path: Path) -> None:
    browser.find_element(By.ID, "photo-input").send_keys(str(path))


def test_page_stylizes_a_photo_and_downloads_the_result(browser, server, photos, downloads) -> None:
    open_page(browser, server)
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
    assert [c.get_attribute("data-model") for c in cards] == ["tiny_dots", "tiny_waves"]
    waves = cards[1].text
    assert "Tiny Waves" in waves and "Test Painter, 1901" in waves and "123 training steps" in waves
    assert "waves.safetensors" in waves
    assert "2 models on cpu (fp32)" in browser.find_element(By.ID, "server-info").text
    assert browser.find_element(By.ID, "run").get_attribute("disabled")  # nothing chosen yet

    choose_photo(browser, photos["holiday photo"])
    assert state(browser) == "idle"  # a photo without a model does not run
    cards[1].click()
    assert cards[1].get_attribute("aria-checked") == "true"
    wait_for_state(browser, "done")
    result = browser.find_element(By.ID, "result-img")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result) == [
        256,
        192,
    ]  # the default size: long side 256
    assert browser.find_element(By.ID, "source-img").get_attribute("naturalWidth") == "320"
    assert "tiny_waves, 256 × 192 px" in browser.find_element(By.ID, "result-caption").text
    elapsed = browser.find_element(By.ID, "elapsed").text
    assert elapsed.startswith("stylized in ") and " s on cpu" in elapsed, elapsed

    # other options: another size and model re-run by themselves
    Select(browser.find_element(By.ID, "size")).select_by_value("384")
    browser.find_element(By.ID, "preserve-color").click()
    cards[0].click()
    WebDriverWait(browser, 60).until(lambda d: "tiny_dots, 384" in d.find_element(By.ID, "result-caption").text)
    wait_for_state(browser, "done")

    link = browser.find_element(By.ID, "download")
    assert link.is_displayed() and link.get_attribute("download") == "holiday_photo_tiny_dots.png"
    link.click()
    target = downloads / "holiday_photo_tiny_dots.png"

    # Chromium may reserve the final name with an empty file while it writes NAME.crdownload, then
    # renames that over it: done when the file has bytes and no .crdownload is left.
    def complete() -> bool:
        return target.is_file() and target.stat().st_size > 0 and not any(downloads.glob("*.crdownload"))

    deadline = time.monotonic() + 30
    while not complete() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert complete(), sorted(p.name for p in downloads.iterdir())
    with Image.open(io.BytesIO(target.read_bytes())) as img:
        assert img.format == "PNG" and img.size == (384, 288)


def test_page_says_what_is_wrong_and_keeps_working(browser, server, photos) -> None:
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-model="tiny_waves"]').click()

    choose_photo(browser, photos["notes"])  # not an image: the server says so
    wait_for_state(browser, "error")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "not an image" in error.text

    choose_photo(browser, photos["huge"])  # over the upload limit: the page says so without uploading
    WebDriverWait(browser, 30).until(lambda d: "accepts photos up to" in error.text)
    assert re.fullmatch(r"huge\.png is 0\.3\d MB; this server accepts photos up to 0\.19 MB\.", error.text), error.text
    assert state(browser) == "error"

    choose_photo(browser, photos["holiday photo"])  # and a good photo still works
    wait_for_state(browser, "done")
    assert not error.is_displayed()
    assert browser.find_element(By.ID, "result-img").get_attribute("naturalWidth") == "256"


DROP_PHOTO = """
const [width, height, done] = arguments;
const canvas = document.createElement("canvas");
canvas.width = width; canvas.height = height;
const g = canvas.getContext("2d");
const gradient = g.createLinearGradient(0, 0, width, height);
gradient.addColorStop(0, "#3050c0"); gradient.addColorStop(1, "#f0c040");
g.fillStyle = gradient; g.fillRect(0, 0, width, height);
canvas.toBlob((blob) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "dropped.png", {type: "image/png"}));
  const zone = document.getElementById("drop-zone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
  done();
}, "image/png");
"""


def test_a_dropped_photo_is_stylized(browser, server) -> None:
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-model="tiny_dots"]').click()
    Select(browser.find_element(By.ID, "size")).select_by_value("0")  # the photo's own size
    browser.execute_async_script(DROP_PHOTO, 200, 120)
    wait_for_state(browser, "done")
    assert "dropped.png" in browser.find_element(By.ID, "source-caption").text
    assert "tiny_dots, 200 × 120 px" in browser.find_element(By.ID, "result-caption").text
