"""The page as a person uses it: the real server (shipped CamVid model) on a free loopback port, Debian's
headless Chromium driven through chromedriver (selenium; nothing downloaded), a real CamVid validation
image uploaded through the file picker. Checks the overlay, the legend (exactly the classes the model
predicts, with their shares), isolating a class, the hover read-out, the opacity slider and the label PNG
download; leaves a screenshot (copied to $SEGLAB_SERVE_SCREENSHOT when set, for docs/serve.md). A second
test serves tiny instance and panoptic models: the legend lists their segments with class and score."""
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
        from seglab.pretrained import model_card

        card_line = d.find_element(By.ID, "card").text  # how the model was trained, from the weights registry
        assert model_card("bisenetv2.camvid")["figure"] in card_line and "trained on CamVid" in card_line
        assert "resized to short side 360" in card_line

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


DROP_FILE = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], arguments[1], { type: "image/png" }));
const target = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"])
  target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
"""


def legend_rows(d):
    from selenium.webdriver.common.by import By

    return [(r, r.find_element(By.CLASS_NAME, "name").text, r.find_element(By.CLASS_NAME, "share").text)
            for r in d.find_elements(By.CSS_SELECTOR, "#legend li")]


def entry_label(segment: dict) -> str:
    """How the page names a segment: the class, and the score for those that have one."""
    return segment["name"] if "score" not in segment else f"{segment['name']} {segment['score']:.2f}"


@pytest.mark.slow
def test_the_page_shows_instance_and_panoptic_segments(browser, tmp_path):
    """An instance and a panoptic model (tiny, untrained: they still find segments) on one server: the
    image is dropped on the page; the legend lists the segments with class and score, the min-score field
    asks the server again, clicking a
    segment shows only it, the hover names the segment under the cursor, and switching the model to the
    panoptic one lists its segments (scores on things only)."""
    import base64
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from seglab.serve import build_app
    from serve_helpers import decode_map, photo, png, post_image, save_tiny_model

    detection = dict(width=8, fpn_channels=16, representation_size=32, mask_channels=16, mask_layers=1,
                     anchor_sizes=[[16], [32], [64], [128], [256]], rpn_post_nms_top_n_test=20, box_score_thresh=0.0)
    inst = save_tiny_model(tmp_path / "inst.safetensors", "mask_rcnn_resnet18_fpn", num_classes=3,
                           classes=["bg", "cat", "dog"], **detection)
    pan = save_tiny_model(tmp_path / "pan.safetensors", "panoptic_fpn_resnet18", num_classes=3, num_things=1,
                          semantic_channels=8, panoptic_score_thresh=0.0, stuff_area_limit=0, **detection)
    data = png(photo(96, 128, seed=5))
    body = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731

    with ServerThread(build_app([str(inst), str(pan)], device="cpu")) as server:
        expected = json.loads(post_image(server.port, data, "model=inst&score_thresh=0&map=1")[2])
        segments, view = expected["segments"], decode_map(expected["map"])
        assert len(segments) >= 2, "an untrained head still detects"
        d = browser
        d.get(server.url + "/")
        wait_for(lambda: body(d) == "ready", 30, "the models")
        assert Select(d.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == "inst"
        score = d.find_element(By.ID, "score")
        assert score.is_displayed() and float(score.get_attribute("value")) == 0.5, "the model's threshold"
        score.clear()
        score.send_keys("0", Keys.TAB)
        d.execute_script(DROP_FILE, base64.b64encode(data).decode(), "street.png")  # dropped, not picked
        assert wait_for(lambda: body(d) in ("done", "error") and body(d), 120, "the overlay") == "done", \
            d.find_element(By.ID, "status").text

        assert d.find_element(By.ID, "legend-title").text == "segments"
        rows = legend_rows(d)
        assert [name for _, name, _ in rows] == [entry_label(s) for s in segments], "class and score, best first"
        assert [share for _, _, share in rows] == [f"{100 * s['share']:.1f}%" for s in segments]
        w, h, painted, _ = d.execute_script(COUNT_OVERLAY)
        assert (h, w) == view.shape and painted == int((view > 0).sum())
        rows[0][0].click()  # only the most confident segment
        _, _, painted, colours = d.execute_script(COUNT_OVERLAY)
        assert painted == segments[0]["pixels"] and colours == [",".join(map(str, segments[0]["color"]))]
        rows[0][0].click()

        # hover over the most confident segment: its class and score
        from selenium.webdriver.common.action_chains import ActionChains

        ys, xs = np.nonzero(view == 1)
        centre = len(xs) // 2
        overlay = d.find_element(By.ID, "overlay")
        ActionChains(d).move_to_element_with_offset(overlay, int(xs[centre]) - w // 2, int(ys[centre]) - h // 2).perform()
        text = wait_for(lambda: d.find_element(By.ID, "hover").text, 10, "the hover read-out")
        xy, label = text.split(") ", 1)
        x, y = (int(v) for v in xy.strip("(").split(", "))
        under = view[y, x]
        assert label == (entry_label(segments[under - 1]) if under else "—"), text

        # a higher min score: the page asks again and lists fewer segments
        threshold = (segments[0]["score"] + segments[-1]["score"]) / 2
        score.clear()
        score.send_keys(f"{threshold:.4f}", Keys.TAB)
        wait_for(lambda: body(d) == "done" and len(legend_rows(d)) == sum(s["score"] >= round(threshold, 4)
                                                                          for s in segments), 60, "fewer segments")

        # the panoptic model: its segments, scores on things only, no min-score field
        Select(d.find_element(By.ID, "model")).select_by_value("pan")
        wanted = json.loads(post_image(server.port, data, "model=pan")[2])["segments"]
        wait_for(lambda: body(d) == "done" and [n for _, n, _ in legend_rows(d)] == [entry_label(s) for s in wanted],
                 120, "the panoptic segments in the legend")
        assert not d.find_element(By.ID, "score").is_displayed()
        assert all(("score" in s) == s["isthing"] for s in wanted)
        d.save_screenshot(str(tmp_path / "segments.png"))
