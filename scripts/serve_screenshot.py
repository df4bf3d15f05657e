"""Screenshot of the fastst serve page with a result, for the README (docs/serve_page.jpg).

    python scripts/serve_screenshot.py MODEL.safetensors PHOTO.jpg -o docs/serve_page.jpg [--size 512]
    python scripts/serve_screenshot.py MULTI.safetensors PHOTO.jpg -o docs/serve_mix.png --mix starry_night=60,udnie=40
    python scripts/serve_screenshot.py FAST.int8.onnx PHOTO.jpg -o docs/serve_camera.png --camera 15

Starts ``fastst serve MODEL --port 0``, opens the page in headless Chromium (Selenium with the
distribution's chromium + chromedriver, as tests/browser/test_serve_browser.py does), picks the model,
uploads the photo, waits for the result and saves a screenshot of the whole page. ``--mix`` sets the
mixing sliders of a multi-style model (percent per style); ``--camera SECONDS`` starts the camera
(Chromium's fake device: a moving test pattern) on the default camera model and shoots after that long.
"""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, nargs="+", help="model files or folders, as for fastst serve")
    p.add_argument("photo", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/serve_page.jpg"))
    p.add_argument("--size", default="512", help="the output size to pick on the page (default: 512)")
    p.add_argument("--width", type=int, default=1280, help="browser window width (default: 1280)")
    p.add_argument("--mix", help="a multi-style model's sliders, NAME=PERCENT,NAME=PERCENT")
    p.add_argument("--camera", type=float, default=0, help="run the camera this many seconds, then shoot")
    args = p.parse_args()

    proc = subprocess.Popen(
        [sys.executable, "-m", "fastst", "serve", *map(str, args.model), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    driver = None
    try:
        for line in proc.stdout:
            print(line, end="")
            if line.startswith("open "):
                url = line.split()[1]
                break
        else:
            return 1
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.width},900",
                    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):  # fmt: skip
            options.add_argument(arg)
        service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
        driver = webdriver.Chrome(options=options, service=service)
        driver.get(url)
        state = "return document.body.dataset.state"
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(state) == "idle")
        driver.find_element(By.CSS_SELECTOR, "#gallery .card").click()
        Select(driver.find_element(By.ID, "size")).select_by_value(args.size)
        driver.find_element(By.ID, "photo-input").send_keys(str(args.photo.resolve()))
        WebDriverWait(driver, 300).until(lambda d: d.execute_script(state) in ("done", "error"))
        if args.mix:
            Select(driver.find_element(By.ID, "style")).select_by_value("__mix__")
            WebDriverWait(driver, 300).until(lambda d: d.execute_script(state) in ("done", "error"))
            weights = dict(part.split("=") for part in args.mix.split(","))
            driver.execute_script(
                """for (const [name, value] of Object.entries(arguments[0])) {
                  const r = document.getElementById("mix-" + name);
                  r.value = value;
                  r.dispatchEvent(new Event("input"));
                }
                document.querySelector("#mix-sliders input").dispatchEvent(new Event("change"));""",
                weights,
            )
            mix = ", ".join(f"{k}={int(v) / 100:g}" for k, v in weights.items())
            WebDriverWait(driver, 300).until(lambda d: mix in d.find_element(By.ID, "result-caption").text)
            WebDriverWait(driver, 300).until(lambda d: d.execute_script(state) in ("done", "error"))
        if args.camera:
            driver.find_element(By.ID, "camera-start").click()
            time.sleep(args.camera)
            print("camera:", driver.find_element(By.ID, "fps").text)
        if driver.execute_script(state) == "error":
            print("error on the page:", driver.find_element(By.ID, "error").text, file=sys.stderr)
            return 1
        width, height = driver.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
        )
        shot = driver.execute_cdp_cmd(  # the whole page, not only the window
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width,
                                                                      "height": height, "scale": 1}},
        )  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        png = base64.b64decode(shot["data"])
        if args.output.suffix.lower() in (".jpg", ".jpeg"):  # a photo-heavy page: a quarter of the PNG's size
            Image.open(io.BytesIO(png)).convert("RGB").save(args.output, quality=88, optimize=True)
        else:
            args.output.write_bytes(png)
        print(f"wrote {args.output} ({width} x {height}); {driver.find_element(By.ID, 'elapsed').text}")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
