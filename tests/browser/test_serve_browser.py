"""fastst serve in a real headless Chromium (Selenium + the distribution's chromium and chromedriver).

`.ci/run` installs them (apt: chromium chromium-driver). Without them these tests skip and say why.
The page's ``document.body.dataset.state`` (loading | idle | running | done | error) is what they wait on.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import threading
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

from fastst.cli import serve as command  # noqa: E402
from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models  # noqa: E402
from tests.conftest import synthetic_image  # noqa: E402
from tests.serve.test_serve import (  # noqa: E402
    BlockingStylizer,
    LiveServer,
    export_onnx_copy,
    make_model_file,
    make_multi_model_file,
    stylize,
    wait_until,
)

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
                "--disable-gpu", "--no-first-run", "--disable-extensions",
                # the camera: Chromium's fake device (a moving test pattern), allowed without a prompt
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):  # fmt: skip
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
    # A run would start at the latest when the page has read the photo (dataset.photo): check after that, so a
    # delayed run cannot hide behind an early look.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.photo") == "ready")
    assert state(browser) == "idle"  # a photo without a model does not run
    assert browser.find_element(By.ID, "status").text == "Pick a model."
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


# -- every model kind: the style picker, mixing, the painting path, sizes, cancel, the camera ----------------------
@pytest.fixture(scope="module")
def kinds_server(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("browser_kinds")
    waves = make_model_file(root / "tiny_waves.safetensors", "tiny_waves", seed=0)
    export_onnx_copy(waves, int8=True)  # the camera's default: the fastest model
    make_multi_model_file(root / "starry_night-udnie.safetensors")
    models = load_models([root], device="cpu")
    live = LiveServer(create_app(models, Limits(default_size=256), allowed_hosts=command.LOOPBACK_HOSTS))
    live.models = models
    yield live
    live.stop()


def result_png(browser) -> Image.Image:
    """The result the page shows, its pixels read back through a canvas (the page's CSP allows no fetch of blob:)."""
    url = browser.execute_script(
        """const img = document.getElementById("result-img");
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        canvas.getContext("2d").drawImage(img, 0, 0);
        return canvas.toDataURL("image/png");"""
    )
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def api_png(server, photo: Path, **params) -> Image.Image:
    from starlette.testclient import TestClient

    with TestClient(create_app(server.models)) as client:
        r = stylize(client, photo.read_bytes(), **params)
        assert r.status_code == 200, r.text
        return Image.open(io.BytesIO(r.content)).convert("RGB")


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return sum(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes())) / len(a.tobytes())


def pick_multi(browser, server, photo: Path) -> None:
    open_page(browser, server)
    card = browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-model="starry_night-udnie"]')
    assert "2 styles: starry_night, udnie" in card.text and "torch fp32" in card.text
    card.click()
    choose_photo(browser, photo)
    wait_for_state(browser, "done")


def test_the_style_picker_renders_the_picked_style(browser, kinds_server, photos) -> None:
    photo = photos["holiday photo"]
    pick_multi(browser, kinds_server, photo)
    picker = Select(browser.find_element(By.ID, "style"))
    assert [o.get_attribute("value") for o in picker.options] == ["starry_night", "udnie", "__mix__"]
    assert "Starry Night (Painter 0)" in picker.options[0].text
    assert "starry_night-udnie (starry_night), 256 × 192 px" in browser.find_element(By.ID, "result-caption").text
    picker.select_by_value("udnie")
    WebDriverWait(browser, 60).until(lambda d: "(udnie)" in d.find_element(By.ID, "result-caption").text)
    wait_for_state(browser, "done")
    shown = result_png(browser)
    udnie = api_png(kinds_server, photo, model="starry_night-udnie", style="udnie", size=256)
    night = api_png(kinds_server, photo, model="starry_night-udnie", style="starry_night", size=256)
    assert mean_diff(udnie, night) > 5  # the two styles differ ...
    assert mean_diff(shown, udnie) == 0  # ... and the page shows the one picked


SET_SLIDERS = """
for (const [name, value] of Object.entries(arguments[0])) {
  const range = document.getElementById("mix-" + name);
  range.value = String(value);
  range.dispatchEvent(new Event("input"));
}
document.getElementById("mix-udnie").dispatchEvent(new Event("change"));
"""


def test_mixing_sliders_send_the_mix(browser, kinds_server, photos) -> None:
    photo = photos["holiday photo"]
    pick_multi(browser, kinds_server, photo)
    Select(browser.find_element(By.ID, "style")).select_by_value("__mix__")
    sliders = browser.find_element(By.ID, "mix-sliders")
    assert sliders.is_displayed()
    assert [e.get_attribute("data-style") for e in sliders.find_elements(By.TAG_NAME, "input")] == MULTI
    wait_for_state(browser, "done")  # the mix as the sliders start: all the first style
    browser.execute_script(SET_SLIDERS, {"starry_night": 30, "udnie": 70})
    caption = "(starry_night=0.3, udnie=0.7)"
    WebDriverWait(browser, 60).until(lambda d: caption in d.find_element(By.ID, "result-caption").text)
    wait_for_state(browser, "done")
    shown = result_png(browser)
    mixed = api_png(kinds_server, photo, model="starry_night-udnie", mix="starry_night=0.3,udnie=0.7", size=256)
    udnie = api_png(kinds_server, photo, model="starry_night-udnie", style="udnie", size=256)
    assert mean_diff(shown, mixed) == 0 and mean_diff(shown, udnie) > 0.5


MULTI = ["starry_night", "udnie"]


def test_a_painting_is_refused_for_now_and_the_old_result_is_cleared(browser, kinds_server, photos, tmp_path) -> None:
    pick_multi(browser, kinds_server, photos["holiday photo"])
    assert browser.find_element(By.ID, "download").is_displayed()
    painting = tmp_path / "my painting.png"
    synthetic_image(11, (200, 160)).save(painting)
    browser.find_element(By.CSS_SELECTOR, "#painting-box summary").click()
    browser.find_element(By.ID, "painting-input").send_keys(str(painting))
    wait_for_state(browser, "error")
    assert "does not take a painting (style_image)" in browser.find_element(By.ID, "error").text
    # the previous result, its caption and its download are gone: nothing stale on screen
    assert not browser.find_element(By.ID, "result-img").is_displayed()
    assert not browser.find_element(By.ID, "download").is_displayed()
    assert browser.find_element(By.ID, "result-caption").text == "The result"
    browser.find_element(By.ID, "painting-clear").click()
    wait_for_state(browser, "done")
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_sizes_offered_fit_the_photo(browser, kinds_server, photos) -> None:
    pick_multi(browser, kinds_server, photos["holiday photo"])  # 320 x 240: at most 640 px
    offered = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "size")).options]
    assert offered == ["256", "384", "512", "0"]


def test_a_long_run_shows_progress_and_can_be_cancelled(browser, kinds_server, photos) -> None:
    model = kinds_server.models["starry_night-udnie"]
    blocking = BlockingStylizer(model.stylizer)
    server = None
    open_page(browser, kinds_server)
    try:
        model.stylizer = blocking
        browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-model="starry_night-udnie"]').click()
        choose_photo(browser, photos["holiday photo"])
        wait_for_state(browser, "running")
        wait_until(lambda: blocking.active == 1, "the run to reach the stylizer")
        assert browser.find_element(By.ID, "progress-row").is_displayed()
        WebDriverWait(browser, 10).until(lambda d: " s" in d.find_element(By.ID, "progress-text").text)
        browser.find_element(By.ID, "cancel").click()
        wait_for_state(browser, "cancelled")
        assert browser.find_element(By.ID, "status").text == "Cancelled."
        assert not browser.find_element(By.ID, "result-img").is_displayed()
    finally:
        blocking.release.set()
        model.stylizer = blocking.inner
    del server


def test_the_camera_is_stylized_live_with_fps_and_a_snapshot(browser, kinds_server, downloads) -> None:
    open_page(browser, kinds_server)
    chosen = Select(browser.find_element(By.ID, "camera-model")).first_selected_option
    assert chosen.get_attribute("value") == "tiny_waves-int8"  # the fastest model by default
    browser.find_element(By.ID, "camera-start").click()
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.camera") == "on")
    WebDriverWait(browser, 60).until(lambda d: int(d.execute_script("return document.body.dataset.frames")) >= 10)
    fps = browser.find_element(By.ID, "fps").text
    assert re.match(r"\d+\.\d frames/s, 640 × 360, onnxruntime int8", fps), fps
    out = browser.find_element(By.ID, "camera-out")
    assert browser.execute_script("return [arguments[0].width, arguments[0].height]", out) == [640, 360]
    browser.find_element(By.ID, "snapshot").click()
    target = downloads / "camera_tiny_waves-int8.png"
    deadline = time.monotonic() + 30
    while not (target.is_file() and target.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    with Image.open(target) as img:
        assert img.format == "PNG" and img.size == (640, 360)
    browser.find_element(By.ID, "camera-stop").click()
    assert browser.execute_script("return document.body.dataset.camera") == "off"


def test_a_busy_server_is_waited_out_not_failed(browser, tmp_path, photos) -> None:
    """The queue is full (one request held at the stylizer, --queue 1): the page gets 503 + Retry-After, says it
    will try again, and does once the server frees up, instead of showing an error."""
    import httpx

    make_model_file(tmp_path / "waves.safetensors", "tiny_waves", seed=0)
    models = load_models([tmp_path], device="cpu")
    blocking = BlockingStylizer(models["tiny_waves"].stylizer)
    models["tiny_waves"].stylizer = blocking
    app = create_app(models, Limits(queue=1, default_size=256), allowed_hosts=command.LOOPBACK_HOSTS)
    live = LiveServer(app)
    held: list = []
    try:
        params = {"model": "tiny_waves", "size": 64}
        holder = threading.Thread(
            target=lambda: held.append(httpx.post(f"{live.url}/api/stylize", params=params,
                                                  content=photos["holiday photo"].read_bytes(), timeout=60))
        )  # fmt: skip
        holder.start()
        wait_until(lambda: app.state.server.pending == 1 and blocking.active == 1, "the queue to be full")
        open_page(browser, live)
        choose_photo(browser, photos["holiday photo"])
        WebDriverWait(browser, 30).until(lambda d: "trying again in 2 s" in d.find_element(By.ID, "status").text)
        assert state(browser) == "running" and not browser.find_element(By.ID, "error").is_displayed()
        blocking.release.set()
        holder.join(timeout=60)
        wait_for_state(browser, "done")
        assert held[0].status_code == 200 and blocking.calls == 2
    finally:
        blocking.release.set()
        live.stop()


# -- an arbitrary-style model: the user's own painting is the style -----------------------------------------------
@pytest.fixture(scope="module")
def painting_server(tmp_path_factory):
    from tests.inference.test_arbitrary import make_arbitrary_file

    root = tmp_path_factory.mktemp("browser_arbitrary")
    make_arbitrary_file(root / "adain.safetensors")
    models = load_models([root], device="cpu")
    live = LiveServer(create_app(models, Limits(default_size=256), allowed_hosts=command.LOOPBACK_HOSTS))
    live.models = models
    yield live
    live.stop()


def test_an_uploaded_painting_is_the_style_of_an_arbitrary_model(browser, painting_server, photos, tmp_path) -> None:
    from starlette.testclient import TestClient

    from tests.serve.test_serve import multipart

    open_page(browser, painting_server)
    card = browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-model="adain"]')
    assert "any painting" in card.text
    card.click()
    assert browser.find_element(By.ID, "painting-box").get_attribute("open") is not None  # opened for it
    choose_photo(browser, photos["holiday photo"])
    wait_for_state(browser, "error")  # no painting yet: the server says what to do
    assert "takes any painting" in browser.find_element(By.ID, "error").text
    painting = tmp_path / "my painting.png"
    synthetic_image(11, (200, 160)).save(painting)
    browser.find_element(By.ID, "painting-input").send_keys(str(painting))
    wait_for_state(browser, "done")
    shown = result_png(browser)
    body, content_type = multipart(
        {"photo": photos["holiday photo"].read_bytes(), "style_image": painting.read_bytes()}
    )
    with TestClient(create_app(painting_server.models)) as client:
        r = client.post(
            "/api/stylize",
            params={"model": "adain", "size": 256, "strength": "1", "preserve_color": "0"},
            content=body,
            headers={"content-type": content_type},
        )
    assert r.status_code == 200, r.text
    assert mean_diff(shown, Image.open(io.BytesIO(r.content)).convert("RGB")) == 0
