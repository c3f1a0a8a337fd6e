"""The page as a person uses it: the real server (shipped CamVid model) on a free loopback port, Debian's
headless Chromium driven through chromedriver (selenium; nothing downloaded), a real CamVid validation
image uploaded through the file picker. Checks the overlay, the legend (exactly the classes the model
predicts, with their shares), isolating a class, the hover read-out, the opacity slider and the label PNG
download; leaves a screenshot (copied to $SEGLAB_SERVE_SCREENSHOT when set, for docs/serve.md)."""
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from serve_helpers import ServerThread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver); the page test "
                    "needs /usr/bin/chromium and /usr/bin/chromedriver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must never look for browsers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1100,760"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


COUNT_OVERLAY = """
const c = document.getElementById('overlay');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; const colours = new Set();
for (let i = 3; i < d.length; i += 4) if (d[i] > 0) { n++; colours.add(d[i-3] + ',' + d[i-2] + ',' + d[i-1]); }
return [c.width, c.height, n, Array.from(colours)];
"""


@pytest.mark.slow
def test_the_page_predicts_a_camvid_image_in_chromium(browser, shared_dir, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from seglab.data import read_image
    from seglab.serve import build_app

    image_path = sorted((shared_dir / "data" / "camvid" / "val").glob("*.png"))[0]
    app = build_app(["bisenetv2.camvid"], device="cpu")
    served = app.state.service.models["bisenetv2.camvid"]
    # what the page must show: the engine's prediction of this file
    labels = served.predictor.predict_image(read_image(image_path)).labels.numpy()
    classes, palette = served.config["classes"], served.config["palette"]
    counts = np.bincount(labels.reshape(-1), minlength=len(classes))
    present = {classes[i] for i in np.flatnonzero(counts)}

    with ServerThread(app) as server:
        d = browser
        d.get(server.url + "/")
        wait_for(lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", 30, "the models")
        assert d.find_element(By.ID, "model").get_attribute("value") == "bisenetv2.camvid"

        d.find_element(By.ID, "file").send_keys(str(image_path))
        state = wait_for(lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
                         and d.find_element(By.TAG_NAME, "body").get_attribute("data-state"), 240, "the overlay")
        assert state == "done", d.find_element(By.ID, "status").text

        # the overlay covers every pixel, in the palette's colours
        w, h, painted, colours = d.execute_script(COUNT_OVERLAY)
        assert (h, w) == labels.shape and painted == labels.size
        assert {tuple(map(int, c.split(","))) for c in colours} == {tuple(palette[classes.index(n)]) for n in present}

        # the legend names exactly the predicted classes, most pixels first, with their shares
        rows = d.find_elements(By.CSS_SELECTOR, "#legend li")
        names = [r.find_element(By.CLASS_NAME, "name").text for r in rows]
        assert set(names) == present and {"road", "building", "sky"} <= present
        assert names[0] == classes[int(counts.argmax())]
        share = float(rows[0].find_element(By.CLASS_NAME, "share").text.rstrip("%"))
        assert share == pytest.approx(100 * counts.max() / labels.size, abs=0.06)

        # click a class: only its pixels stay coloured; click again: all of them
        road = next(r for r in rows if r.find_element(By.CLASS_NAME, "name").text == "road")
        road.click()
        assert road.get_attribute("aria-pressed") == "true"
        _, _, painted, colours = d.execute_script(COUNT_OVERLAY)
        assert painted == counts[classes.index("road")] and colours == [",".join(map(str, palette[classes.index("road")]))]
        road.click()
        assert d.execute_script(COUNT_OVERLAY)[2] == labels.size

        # hover: the class under the cursor
        overlay = d.find_element(By.ID, "overlay")
        ActionChains(d).move_to_element_with_offset(overlay, -60, 40).perform()
        text = wait_for(lambda: d.find_element(By.ID, "hover").text, 10, "the hover read-out")
        xy, name = text.split(") ")
        x, y = (int(v) for v in xy.strip("(").split(", "))
        assert name == classes[labels[y, x]], text

        # the opacity slider fades the overlay
        slider = d.find_element(By.ID, "opacity")
        slider.send_keys(Keys.HOME)
        assert float(overlay.value_of_css_property("opacity")) == 0.0
        for _ in range(5):
            slider.send_keys(Keys.ARROW_RIGHT)
        assert float(overlay.value_of_css_property("opacity")) == pytest.approx(0.05)
        slider.send_keys(Keys.END)

        # download the label PNG: the class index per pixel, as `seglab predict` writes it
        d.find_element(By.ID, "download").click()
        saved = wait_for(lambda: [p for p in d.downloads.glob("*_labels.png")], 240, "the label PNG download")
        time.sleep(0.2)
        assert saved[0].name == f"{image_path.stem}_labels.png"
        assert np.array_equal(np.array(Image.open(saved[0])), labels)

        road.click()  # the picture for the docs: one class picked out
        shot = tmp_path / "serve_page.png"
        assert d.save_screenshot(str(shot)) and Image.open(shot).size[0] > 0
        road.click()
        if os.environ.get("SEGLAB_SERVE_SCREENSHOT"):
            d.find_element(By.ID, "opacity").send_keys(Keys.END)
            for _ in range(30):
                d.find_element(By.ID, "opacity").send_keys(Keys.ARROW_LEFT)
            ActionChains(d).move_to_element_with_offset(overlay, -60, 40).perform()
            d.save_screenshot(os.environ["SEGLAB_SERVE_SCREENSHOT"])
