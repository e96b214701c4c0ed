"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium over chromedriver.

It loads the page on rows written through the product's sink, checks that the charts were drawn from the
right numbers (the page's own state, the cards' figures and uPlot's data), that clicking an alert lists
the incident's posts with hostile text shown as text, and writes a screenshot under tmp_path.

`make test` installs `chromium` and `chromium-driver` when missing and run as root; elsewhere the test
skips, saying which binary is missing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.post import Post
from stream.dashboard.read_model import DashboardReader
from stream.migrate import make_engine
from stream.sink import PostgresSink, SinkRecord
from tests.stream.dashboard_data import HOSTILE_TEXT, Verdict, seed, served

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; "
           f"`make test` does it as root): chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}")


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1500,1900", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate, timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_draws_the_right_numbers_and_drills_into_an_alerts_posts(browser, migrated_db: str,
                                                                      tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    engine = make_engine(migrated_db)
    data = seed(engine)
    try:
        with served(DashboardReader(engine), refresh_s=2.0) as base:
            browser.get(base + "/")
            _wait(lambda: browser.execute_script("return Number(document.body.dataset.loaded || 0) >= 1"),
                  what="the first load")
            browser.find_element(By.CSS_SELECTOR, "#since option[value='6h']").click()
            _wait(lambda: browser.execute_script(
                "const s = window.sentistream.state.series; return s && s.since === '6h'"), what="the 6 h span")
            state = browser.execute_script("return window.sentistream.state")
            assert state["error"] is None
            topics = {t["topic"]: t for t in state["series"]["topics"]}
            assert set(topics) == set(data.hours)
            for name, hours in data.hours.items():
                got = {datetime.fromtimestamp(t, UTC): (p, s, n) for t, p, s, n in zip(
                    topics[name]["t"], topics[name]["n_posts"], topics[name]["n_scored"],
                    topics[name]["n_negative"], strict=True)}
                for hour, numbers in hours.items():
                    assert got[hour] == numbers, (name, hour)
                assert sum(p for p, _, _ in got.values()) == sum(p for p, _, _ in hours.values())
                # what uPlot holds is what came from the API: the volume chart's y values per bucket
                card = browser.find_element(By.CSS_SELECTOR, f"article.card[data-topic='{name}']")
                assert card.find_element(By.CSS_SELECTOR, ".stats").get_attribute("data-total-posts") == \
                    str(sum(p for p, _, _ in hours.values()))
                assert card.find_elements(By.CSS_SELECTOR, ".share-chart canvas")
                assert card.find_elements(By.CSS_SELECTOR, ".volume-chart canvas")
            acme_total = sum(p for p, _, _ in data.hours["acme-phone"].values())
            acme_card = browser.find_element(By.CSS_SELECTOR, "article.card[data-topic='acme-phone']")
            assert f"{acme_total}" in acme_card.find_element(By.CSS_SELECTOR, ".stats").text
            legend = browser.find_element(By.CSS_SELECTOR, "#compare-chart .u-legend").text
            assert "acme-phone" in legend and "skyways" in legend

            rows = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
            assert [r.get_attribute("data-alert-id") for r in rows] == [str(data.alert_id)]
            assert "skyways" in rows[0].text and "87.5%" in rows[0].text
            rows[0].click()
            _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#detail-posts tbody tr"), what="the drill-down")
            listed = browser.find_elements(By.CSS_SELECTOR, "#detail-posts tbody tr")
            assert {r.get_attribute("data-post-id") for r in listed} == data.incident_post_ids
            texts = [r.find_element(By.CSS_SELECTOR, "td.text").text for r in listed]
            assert HOSTILE_TEXT in texts  # shown as text ...
            assert browser.execute_script("return window.__pwned === undefined && !document.getElementById('evil')")
            links = browser.find_elements(By.CSS_SELECTOR, "#detail-posts a[rel~='noopener']")
            assert len(links) == len(listed)
            explanation = browser.find_element(By.ID, "detail-explanation").text
            assert "check-in" in explanation and "#skywaysdown" in explanation
            evidence = browser.find_element(By.ID, "detail-evidence").text
            assert "z_binomial" in evidence and "note_from_a_newer_detector" in evidence
            assert "image" in browser.find_element(By.CSS_SELECTOR, "#detail-posts tr[data-post-id='x1']").text

            # a click on a bucket of a topic's chart lists that bucket's posts: the burst hour of skyways
            burst_hour = int(data.window_start.replace(minute=0, second=0).timestamp())
            over = browser.find_element(By.CSS_SELECTOR, "article.card[data-topic='skyways'] .share-chart .u-over")
            x, width = browser.execute_script(
                "const u = window.sentistream.charts.topics.get('skyways').share;"
                "return [u.valToPos(arguments[0], 'x'), u.over.getBoundingClientRect().width];", burst_hour)
            ActionChains(browser).move_to_element_with_offset(over, int(x - width / 2), 0).click().perform()
            _wait(lambda: "Bucket" in browser.find_element(By.ID, "detail-title").text, what="the bucket's posts")
            bucket_ids = {r.get_attribute("data-post-id")
                          for r in browser.find_elements(By.CSS_SELECTOR, "#detail-posts tbody tr")}
            assert bucket_ids == data.incident_post_ids | {"late"}  # the burst and the post after it, that hour

            # live refresh: a post written now shows up on the page without a reload
            PostgresSink(engine).write([SinkRecord(
                Post(platform="mastodon", post_id="fresh", text="arrived while the page was open", topic="acme-phone",
                     created_at=datetime.now(UTC) - timedelta(minutes=1)), sentiment=Verdict("negative", -1.0))])
            _wait(lambda: browser.execute_script(
                "return window.sentistream.state.series.topics.find(t => t.topic === 'acme-phone').total_posts")
                == acme_total + 1, timeout=60, what="the live refresh to show the new post")
            assert acme_card.find_element(By.CSS_SELECTOR, ".stats").get_attribute("data-total-posts") == \
                str(acme_total + 1)
            shot = tmp_path / "dashboard.png"
            browser.execute_script("window.scrollTo(0, 0)")
            assert browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 20_000
            assert browser.find_element(By.ID, "detail").screenshot(str(tmp_path / "dashboard-alert.png"))
            logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
            assert logs == [], logs
    finally:
        engine.dispose()
