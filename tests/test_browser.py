"""The chat page in a real browser: Debian's headless Chromium, driven by Selenium, against the
real app (uvicorn on a free loopback port, the real engine and models) over a library of the
sample photos and notes plus a video with subtitles and a PDF. Answers are extractive.

Each state the page reaches is saved as a screenshot in ``test-output/browser/`` (replaced by
every run) for a person to look at. Without chromium and its driver these tests fail: run
``scripts/system-deps.sh``.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from app.demo.media import PdfPage, Scene, make_pdf, make_video, write_srt
from app.http.app import Models, create_app
from tests.conftest import CAT_FILES, copy_sample
from tests.test_http import CAT_QUESTION, ingest_into
from tests.test_ingest_api import KEY, ingest_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# From /work/shared/OFFLINE.md: nothing reaches out (no updates, no first-run pages).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
DESKTOP = (1280, 900)
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "browser"
PHONE = (390, 844)

# Cues of 4 s or more, 2 s apart: ingestion keeps them as two transcript segments.
BELL_CUE = (6.5, 10.5, "The lighthouse keeper rings the brass bell every evening at six o'clock.")
CUES = ((0.0, 4.5, "Welcome aboard the morning harbour tour, past the old fish market."), BELL_CUE)
PLANETARIUM = "Planetarium shows start every hour on the hour in the east wing."
GARDEN = "The rooftop garden grows basil, thyme and nineteen kinds of tomatoes."


# -- the library, the service, the browser -----------------------------------------------------


@pytest.fixture(scope="module")
def library(sample_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos and notes, a video with subtitles (WebM: Chromium plays it) and a
    two-page PDF."""
    root = tmp_path_factory.mktemp("browser") / "library"
    shutil.copytree(sample_library, root)
    media = root / "media"
    scenes = (
        Scene("HARBOUR", (20, 60, 140)),
        Scene("MARKET", (30, 140, 60)),
        Scene("LIGHTHOUSE", (200, 120, 20)),
    )
    make_video(media / "harbour-tour.webm", scenes, seconds_per_scene=4.0)
    write_srt(media / "harbour-tour.srt", CUES)
    make_pdf(
        media / "museum-guide.pdf",
        [
            PdfPage(lines=("Museum guide", "Welcome to the city museum.")),
            PdfPage(lines=(PLANETARIUM,)),
        ],
    )
    return root


def serve(app: Litestar) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free 127.0.0.1 port until the generator is closed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture(scope="module")
def service(
    library: Path, models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings = ingest_settings(tmp_path_factory.mktemp("browser-data"))
    ingest_into(settings, models, library)
    yield from serve(create_app(settings, models=models))


@pytest.fixture(scope="module")
def keyed_service(
    sample_library: Path, models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A service that wants an API key for everything but the page, over a small library."""
    settings = ingest_settings(tmp_path_factory.mktemp("keyed-data"), http={"api_keys": KEY})
    small = copy_sample(sample_library, tmp_path_factory.mktemp("keyed-library"), CAT_FILES)
    ingest_into(settings, models, small)
    yield from serve(create_app(settings, models=models))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module (a new one costs a second or two)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser tests need Debian's chromium and "
            "chromium-driver. Run scripts/system-deps.sh (or: apt-get install chromium "
            "chromium-driver).",
            pytrace=False,
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # The console (script errors, CSP violations) and the network (what the page sent).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def page(browser: WebDriver, service: str) -> Iterator[WebDriver]:
    """The page freshly loaded (a new conversation); after the test, the console must hold no
    script error."""
    browser.set_window_size(*DESKTOP)
    browser.get(service)
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    browser_log(browser, "performance")  # start the network record here
    yield browser
    assert_no_script_errors(browser)


# -- helpers ---------------------------------------------------------------------------------


def attr(element: WebElement, name: str) -> str:
    """An attribute the element has (a test fails on one it lacks)."""
    value = element.get_attribute(name)
    assert value is not None, name
    return value


def classes(element: WebElement) -> list[str]:
    return attr(element, "class").split()


def browser_log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's ``browser`` (console) or ``performance`` (network) log since the last call."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def assert_no_script_errors(driver: WebDriver) -> None:
    """No script error or policy violation on the console since the last look. Failed requests
    are the network's, and the tests cause some on purpose (401, 404)."""
    errors = [
        entry["message"]
        for entry in browser_log(driver, "browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert not errors


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def ask(driver: WebDriver, text: str) -> WebElement:
    """Types a question, sends it with Enter, and returns the finished reply."""
    before = len(driver.find_elements(By.CSS_SELECTOR, "article.assistant"))
    box = driver.find_element(By.ID, "question")
    box.send_keys(text, Keys.ENTER)
    return last_reply(driver, before)


def last_reply(driver: WebDriver, before: int) -> WebElement:
    """The reply after the ``before`` ones, once complete (no longer busy)."""

    def finished(d: WebDriver) -> WebElement | bool:
        replies = d.find_elements(By.CSS_SELECTOR, "article.assistant")
        if len(replies) <= before or replies[-1].get_attribute("aria-busy"):
            return False
        return replies[-1]

    reply: WebElement = wait(driver, finished)
    return reply


def cards(reply: WebElement) -> list[WebElement]:
    return reply.find_elements(By.CSS_SELECTOR, ".card-open")


def card_of(reply: WebElement, modality: str) -> WebElement:
    found = [c for c in cards(reply) if c.get_attribute("data-modality") == modality]
    assert found, [c.text for c in cards(reply)]
    return found[0]


def sent(driver: WebDriver, path: str) -> list[dict[str, Any]]:
    """What the page sent to ``path`` and got back, from Chromium's network log: one
    ``{"body", "mime"}`` per request since the last call."""
    requests: dict[str, dict[str, Any]] = {}
    for entry in browser_log(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            if params["request"]["url"].endswith(path):
                body = params["request"].get("postData")
                requests[params["requestId"]] = {"body": body and json.loads(body)}
        elif message["method"] == "Network.responseReceived" and params["requestId"] in requests:
            requests[params["requestId"]]["mime"] = params["response"]["mimeType"]
    return list(requests.values())


def active_element(driver: WebDriver) -> WebElement:
    element: WebElement = driver.execute_script("return document.activeElement")
    return element


def shoot(driver: WebDriver, folder: Path, name: str, show: WebElement | None = None) -> None:
    """Saves what the window shows, scrolled to ``show`` first when given."""
    if show is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", show)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


# -- the tests ---------------------------------------------------------------------------------


def test_a_question_streams_an_answer_with_citation_cards(page: WebDriver, shots: Path) -> None:
    assert active_element(page) == page.find_element(By.ID, "question")  # ready to type
    reply = ask(page, CAT_QUESTION)
    shoot(page, shots, "01-answer-with-citations")

    assert "30 grams of dry food" in reply.find_element(By.CLASS_NAME, "answer-text").text
    first = reply.find_element(By.ID, f"{reply.get_attribute('id')}-source-1")
    opener = first.find_element(By.TAG_NAME, "button")
    assert opener.get_attribute("aria-label") == "Open source 1: library/notes/cat-care.txt"
    assert "cat-care.txt\nlibrary/notes/\ntext\nmeaning 0." in first.text  # name, folder, score
    marker = reply.find_element(By.CSS_SELECTOR, "a.marker")
    assert marker.text == "1"
    assert attr(marker, "href").endswith(f"#{attr(first, 'id')}")
    # The page asked for a stream and read server-sent events.
    (request,) = sent(page, "/v1/chat")
    assert request["mime"] == "text/event-stream"
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [{"role": "user", "content": CAT_QUESTION}]

    marker.click()  # the marker leads to its card, ready to open with Enter
    assert active_element(page) == opener
    opener.send_keys(Keys.ENTER)  # the note opens at the quoted passage
    passage = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#viewer mark"))[0]
    assert "30 grams of dry food" in passage.text
    shoot(page, shots, "01b-the-cited-passage")
    active_element(page).send_keys(Keys.ESCAPE)
    wait(page, lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is None)
    assert active_element(page) == opener

    # A follow-up carries the conversation.
    ask(page, "And how much wet food?")
    (follow_up,) = sent(page, "/v1/chat")
    roles = [m["role"] for m in follow_up["body"]["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert "30 grams" in follow_up["body"]["messages"][1]["content"]


def test_a_video_citation_plays_from_the_cited_second(page: WebDriver, shots: Path) -> None:
    reply = ask(page, "When does the lighthouse keeper ring the brass bell?")
    video_card = card_of(reply, "video")
    span = "0:06\N{EN DASH}0:10"  # the cue's 6.5-10.5 s, as the card writes it
    label = video_card.get_attribute("aria-label")
    assert label == f"Open source 1: library/media/harbour-tour.webm, {span}"
    assert f"video · {span}" in video_card.text
    video_card.click()

    start, end, _ = BELL_CUE
    seeked = """const v = document.querySelector("#viewer video");
        return v && v.readyState >= 1 && !v.seeking && v.currentTime"""
    at = wait(page, lambda d: (t := d.execute_script(seeked)) and t >= start and t)
    assert start <= at <= end
    assert page.find_element(By.ID, "viewer").get_attribute("open") is not None
    shoot(page, shots, "02-video-at-the-cited-second")

    active_element(page).send_keys(Keys.ESCAPE)  # Escape closes the viewer
    wait(page, lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is None)
    assert active_element(page) == video_card  # focus goes back to the card


def test_a_pdf_citation_opens_at_the_cited_page(page: WebDriver, shots: Path) -> None:
    reply = ask(page, "When do the planetarium shows start?")
    pdf_card = card_of(reply, "pdf")
    assert "page 2" in pdf_card.text
    pdf_card.click()
    frame = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#viewer iframe"))[0]
    assert attr(frame, "src").endswith("/content?collection=default#page=2")
    new_tab = page.find_element(By.ID, "viewer-new-tab")
    assert attr(new_tab, "href").endswith("#page=2")
    assert new_tab.get_attribute("target") == "_blank"
    time.sleep(2)  # for the screenshot: the PDF viewer draws in a process of its own
    shoot(page, shots, "03-pdf-at-the-cited-page")
    page.find_element(By.ID, "viewer-close").click()


def test_a_dropped_picture_finds_similar_pictures(
    page: WebDriver, shots: Path, library: Path
) -> None:
    photo = library / "photos" / "places" / "flower.jpg"
    drop = """
        const [data, name, type] = arguments;
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], name, { type: "image/jpeg" }));
        document.getElementById("chat").dispatchEvent(
            new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: files }));
    """
    data = base64.b64encode(photo.read_bytes()).decode()
    page.execute_script(drop, data, photo.name, "dragenter")
    assert "dragging" in classes(page.find_element(By.ID, "chat"))
    shoot(page, shots, "04-dragging-a-picture")
    page.execute_script(drop, data, photo.name, "drop")

    reply = last_reply(page, 0)
    shoot(page, shots, "05-similar-pictures")
    found = cards(reply)
    assert attr(found[0], "aria-label").endswith("photos/places/flower.jpg")  # itself first
    assert "picture 1.00" in found[0].text
    assert "similar picture" in reply.find_element(By.TAG_NAME, "h3").text
    asked = page.find_elements(By.CSS_SELECTOR, "article.user")[-1]
    assert "Pictures like flower.jpg:" in asked.text
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    assert page.execute_script(loaded, found[0].find_element(By.TAG_NAME, "img")) > 0
    assert "dragging" not in classes(page.find_element(By.ID, "chat"))


def test_an_unanswerable_question_says_nothing_was_found(page: WebDriver, shots: Path) -> None:
    reply = ask(page, "When is my quarterly tax filing due?")
    shoot(page, shots, "06-nothing-found")
    assert "nothing-found" in classes(reply)
    assert reply.find_element(By.TAG_NAME, "h3").text == "Nothing found"
    assert "found nothing" in reply.text
    assert not cards(reply)


def test_an_error_shows_the_problem_details(page: WebDriver, shots: Path) -> None:
    page.find_element(By.ID, "collection").send_keys("no-such-collection")
    reply = ask(page, CAT_QUESTION)
    shoot(page, shots, "07-error")
    assert "error" in classes(reply)
    assert reply.find_element(By.TAG_NAME, "h3").text == "Not Found"
    assert "no-such-collection" in reply.text


def test_the_page_fits_a_phone(page: WebDriver, shots: Path) -> None:
    page.set_window_size(*PHONE)
    page.refresh()
    wait(page, lambda d: d.execute_script("return document.readyState") == "complete")
    for panel in ("filters", "upload"):  # folded away: the conversation gets the screen
        assert page.find_element(By.ID, panel).get_attribute("open") is None
    reply = ask(page, CAT_QUESTION)
    shoot(page, shots, "08-phone")
    overflow = "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.execute_script(overflow) <= 0
    width = page.execute_script("return arguments[0].getBoundingClientRect().width", reply)
    assert width <= PHONE[0]
    assert cards(reply)[0].is_displayed()


def test_a_service_with_keys_asks_for_one_then_works(
    browser: WebDriver, keyed_service: str, shots: Path, tmp_path: Path
) -> None:
    browser.set_window_size(*DESKTOP)
    browser.get(keyed_service)  # the page itself needs no key
    dialog = wait(browser, lambda d: d.find_element(By.ID, "key-dialog").is_displayed())
    assert dialog
    reason = browser.find_element(By.ID, "key-reason")
    assert "API key is required" in reason.text
    assert not browser.find_element(By.ID, "upload").is_displayed()  # no key: no uploads
    shoot(browser, shots, "09-key-prompt")

    key_input = browser.find_element(By.ID, "key-input")
    assert active_element(browser) == key_input
    key_input.send_keys("not-the-key", Keys.ENTER)
    wait(browser, lambda d: "refused the key" in d.find_element(By.ID, "key-reason").text)
    browser.find_element(By.ID, "key-input").send_keys(KEY, Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "upload").is_displayed())
    assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('mmrag.apiKey')") == KEY

    reply = ask(browser, CAT_QUESTION)
    assert "30 grams of dry food" in reply.text
    # Pictures come through the key too: fetched, then shown from blob: URLs.
    thumb = card_of(reply, "image").find_element(By.TAG_NAME, "img")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    wait(browser, lambda d: d.execute_script(loaded, thumb))
    assert attr(thumb, "src").startswith("blob:")

    # Uploading: the file picker, then the job's progress until it is done.
    note = tmp_path / "garden.txt"
    note.write_text(GARDEN)
    browser.find_element(By.ID, "upload-files").send_keys(str(note))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    status = browser.find_element(By.ID, "upload-status")
    wait(browser, lambda d: status.text.startswith("Done"))
    assert status.text == "Done: 1 ingested."
    progress = browser.find_element(By.ID, "upload-progress")
    assert attr(progress, "value") == attr(progress, "max") == "1"
    shoot(browser, shots, "10-uploaded", show=status)
    browser.find_element(By.ID, "new-chat").click()  # not a follow-up of the cat's question
    assert not browser.find_elements(By.CSS_SELECTOR, "article.message")
    reply = ask(browser, "Which herbs grow in the rooftop garden?")
    assert "garden.txt" in cards(reply)[0].text
    assert "basil" in reply.find_element(By.CLASS_NAME, "answer-text").text

    browser.refresh()  # the key is kept for the tab: no second prompt
    wait(browser, lambda d: d.find_element(By.ID, "upload").is_displayed())
    assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    browser.execute_script("sessionStorage.clear()")
    assert_no_script_errors(browser)
