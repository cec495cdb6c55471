"""The explorer in a real browser: JupyterLab on a free local port, headless Chromium (Debian's chromium and
chromium-driver, installed by `make setup`), the explorer notebook run with Run All, then a threshold change
and a variant change, each of which must redraw the figure, with no error output anywhere. The notebook
is a temporary copy, so JupyterLab's autosave cannot touch the repository."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silentzone.paths import NOTEBOOKS

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TIMEOUT = 120  # seconds for the kernel to start and the first figure to appear (2 shared cores)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(fn, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def lab(tmp_path):
    """(browser, base url with token) of a JupyterLab serving a copy of the explorer notebook."""
    assert CHROMIUM.is_file() and DRIVER.is_file(), \
        "headless Chromium is missing: `make setup` installs Debian's chromium and chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    shutil.copy(NOTEBOOKS / "00_explore.ipynb", tmp_path)
    port, token = _free_port(), secrets.token_hex(8)
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={tmp_path}",
                             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"],
                            stdout=log, stderr=subprocess.STDOUT)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    try:
        _wait(lambda: _port_open(port), 60, "JupyterLab to listen")
        yield browser, f"http://127.0.0.1:{port}", token
    finally:
        browser.quit()
        proc.terminate()
        proc.wait(20)
        log.close()


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def test_explorer_answers_threshold_and_variant_changes(lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    browser, url, token = lab
    browser.get(f"{url}/lab/tree/00_explore.ipynb?token={token}")
    _wait(lambda: browser.execute_script(
        "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel);"),
        TIMEOUT, "the explorer's kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def figure():
        """The figure's src, or None while there is none. The redraw being waited for replaces the
        img between finding it and reading it (a stale element): that is 'not yet', not an error."""
        from selenium.common.exceptions import StaleElementReferenceException
        try:
            imgs = browser.find_elements(By.CSS_SELECTOR, ".widget-output img")
            return imgs[0].get_attribute("src") if imgs else None
        except StaleElementReferenceException:
            return None

    first = _wait(figure, TIMEOUT, "the first figure")
    box = browser.find_element(By.CSS_SELECTOR, ".widget-text input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("0.04", Keys.ENTER)
    second = _wait(lambda: (f := figure()) and f != first and f, 60, "a redraw after the threshold change")
    labels = {e.text: e for e in browser.find_elements(By.CSS_SELECTOR, ".widget-dropdown")}
    metric = next(e for name, e in labels.items() if name.startswith("metric"))
    Select(metric.find_element(By.TAG_NAME, "select")).select_by_visible_text("kld_p99")
    _wait(lambda: (f := figure()) and f != second and f, 60, "a redraw after the variant change")
    errors = browser.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr'], "
                                   ".jp-OutputArea-output[data-mime-type*='error']")
    assert not errors, [e.text[:300] for e in errors]
    tracebacks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                  if "Traceback" in e.text or "Error" in e.text.split("\n")[0]]
    assert not tracebacks, tracebacks[:1]
