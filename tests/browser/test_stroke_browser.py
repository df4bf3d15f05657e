"""The page's stroke slider (issue 27) in headless Chromium: it shows for a stroke model and sends the stroke."""

from __future__ import annotations

import pytest

pytest.importorskip("selenium", reason="the browser tests need selenium (in the .[dev] extra)")

from selenium.webdriver.common.by import By  # noqa: E402

from fastst.cli import serve as command  # noqa: E402
from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models  # noqa: E402
from tests.browser.test_serve_browser import (  # noqa: E402, F401  (browser, downloads, photos: fixtures)
    api_png,
    browser,
    choose_photo,
    downloads,
    mean_diff,
    open_page,
    photos,
    result_png,
    wait_for_state,
)
from tests.inference.test_stroke import stroke_model_file  # noqa: E402
from tests.serve.test_serve import LiveServer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def stroke_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_stroke")
    stroke_model_file(root)  # irises and bridge at strokes 0.5, 1, 2
    models = load_models([root], device="cpu")
    live = LiveServer(create_app(models, Limits(default_size=256), allowed_hosts=command.LOOPBACK_HOSTS))
    live.models = models
    yield live
    live.stop()


def test_stroke_slider_sends_the_stroke(browser, stroke_server, photos) -> None:  # noqa: F811 (imported fixtures)
    photo = photos["holiday photo"]
    open_page(browser, stroke_server)
    card = browser.find_element(By.CSS_SELECTOR, "#gallery .card")
    name = card.get_attribute("data-model")
    card.click()
    choose_photo(browser, photo)
    wait_for_state(browser, "done")
    assert browser.find_element(By.ID, "stroke-panel").is_displayed()
    assert browser.find_element(By.ID, "stroke-value").text == "1.00"  # the slider starts at stroke 1
    # "stale" first: the new request's "running" can come and go between two polls on a busy machine (it did,
    # and the test timed out waiting for it); its "done" replaces "stale" only once the stroke-2 result is shown
    browser.execute_script(
        'document.body.dataset.state = "stale"; const r = document.getElementById("stroke"); r.value = "100";'
        'r.dispatchEvent(new Event("input")); r.dispatchEvent(new Event("change"));'
    )
    assert browser.find_element(By.ID, "stroke-value").text == "2.00"
    wait_for_state(browser, "done")
    shown = result_png(browser)
    style = {"style": "irises"}
    two = api_png(stroke_server, photo, model=name, stroke="2", size=256, **style)
    one = api_png(stroke_server, photo, model=name, stroke="1", size=256, **style)
    assert mean_diff(two, one) > 1  # the strokes differ ...
    assert mean_diff(shown, two) == 0  # ... and the page shows stroke 2
