"""Browser tests in a real headless Chromium (Debian's chromium and chromium-driver).

`make test` installs the browser, its driver and axe-core (under the venv); nothing is
downloaded while the tests run: Selenium gets the driver's path, so Selenium Manager never
starts. A node's self-signed certificate is trusted by its SPKI pin, as a person who checked
the fingerprint would: `open_browser([spki_pin(pem)])`. Chromium reads that flag only with
its own --user-data-dir, which each browser gets fresh. A pin covers every certificate error
(a node's certificate names the node, not 127.0.0.1); any other certificate stays refused.

Page CSP: WebDriver scripts (execute_script, execute_async_script) run through the DevTools
protocol, which the page's Content-Security-Policy does not govern, so axe-core is injected
as it is, with no Page.setBypassCSP (tests/test_browser_harness.py checks this under the
nodes' CSP, whose inline scripts stay blocked).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
# the Makefile's $(WEB_TOOLS): npm install --prefix $(VENV)/web-tools axe-core
AXE_JS = Path(sys.prefix) / "web-tools" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver")
INSTALL_HINT = ("run `make test` once (it installs Debian's chromium and chromium-driver, "
                "and axe-core under the venv)")
# no updates, sync or other calls home: this machine reaches no host but its own
QUIET_FLAGS = ("--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-default-apps", "--disable-extensions",
               "--no-first-run", "--no-default-browser-check", "--disable-quic",
               "--disable-gpu", "--force-device-scale-factor=1")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def spki_pin(certificate_pem: bytes) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (DER), as Chromium's
    --ignore-certificate-errors-spki-list wants it."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def _executable(candidates: Sequence[str], package: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail(f"{candidates[0]} not found: {INSTALL_HINT}, or "
                f"`apt-get install --no-install-recommends {package}`", pytrace=False)


class _Chromium(WebDriver):
    """Chrome's WebDriver that deletes its temporary profile when it quits."""

    def __init__(self, profile: str, **kwargs: Any) -> None:
        self._profile = profile
        try:
            super().__init__(**kwargs)
        except BaseException:
            shutil.rmtree(profile, ignore_errors=True)
            raise

    def quit(self) -> None:
        try:
            super().quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)


def open_browser(pins: Sequence[str], *, width: int = 1280, height: int = 900) -> WebDriver:
    """A headless Chromium, its viewport width x height CSS pixels, trusting the
    certificates of these SPKI pins (and no others); the caller quits it."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, were it ever started
    options = webdriver.ChromeOptions()
    options.binary_location = _executable(CHROMIUM, "chromium")
    profile = tempfile.mkdtemp(prefix="concilium-chromium-")
    for flag in ("--headless=new", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={width + 200},{height + 400}", *QUIET_FLAGS):
        options.add_argument(flag)
    if pins:
        options.add_argument(f"--ignore-certificate-errors-spki-list={','.join(pins)}")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    service = Service(executable_path=_executable(CHROMEDRIVER, "chromium-driver"))
    driver = _Chromium(profile, options=options, service=service)
    # the window's size includes (headless) browser chrome, 143 pixels tall in Chromium 156:
    # started larger, so that the chrome shows, then shrunk to a viewport of width x height
    try:
        chrome = driver.execute_script("return [window.outerWidth - window.innerWidth, "
                                       "window.outerHeight - window.innerHeight]")
        driver.set_window_size(width + chrome[0], height + chrome[1])
    except BaseException:
        driver.quit()
        raise
    return driver


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page (up to 16384 CSS pixels tall) as test-artifacts/browser/<name>.png:
    the viewport is made that tall for the shot, then given back."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r}: letters, digits, '.', '_' or '-'")
    # not captureBeyondViewport, which leaves the page without its scrollbar afterwards
    width, height = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": min(height, 16384), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


_RUN_AXE = """
const done = arguments[arguments.length - 1];
const options = {resultTypes: ['violations']};
if (arguments[0]) options.runOnly = {type: 'rule', values: arguments[0]};
axe.run(document, options).then(
  (results) => done({violations: results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target}))}))}),
  (error) => done({error: String(error)}));
"""


def axe_violations(driver: WebDriver, *,
                   rules: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on the current page (all its rules, or only these rule ids):
    each {"id", "impact", "help", "nodes": [{"target": [css selector, ...]}]}."""
    if not AXE_JS.is_file():
        pytest.fail(f"axe-core not found at {AXE_JS}: {INSTALL_HINT}", pytrace=False)
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(AXE_JS.read_text(encoding="utf-8"))
    outcome = driver.execute_async_script(_RUN_AXE, list(rules) if rules else None)
    if "error" in outcome:
        raise RuntimeError(f"axe.run failed: {outcome['error']}")
    violations: list[dict[str, Any]] = outcome["violations"]
    return violations


def navigation_ms(driver: WebDriver,
                  until: Literal["loadEventEnd", "responseEnd"] = "loadEventEnd") -> float:
    """Milliseconds of the last navigation, from its start (startTime, so TLS and the request
    included) to the end of its load event (the page and its resources) or of its response;
    waits for that end if it has not come yet, -1 without a navigation entry."""
    return float(driver.execute_async_script(_NAVIGATION, until))


_NAVIGATION = """
const [key, done] = arguments;
const check = () => {
  const entry = performance.getEntriesByType('navigation')[0];
  if (!entry) done(-1);
  else if (entry[key] > 0) done(entry[key] - entry.startTime);
  else setTimeout(check, 10);
};
check();
"""
