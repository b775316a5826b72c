"""tests/browser.py: a real headless Chromium, an SPKI-pinned self-signed HTTPS server
with the nodes' Content-Security-Policy, screenshots, axe-core and the keyboard."""

from __future__ import annotations

import datetime
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser import axe_violations, navigation_ms, open_browser, screenshot, spki_pin

# the node's pages send this policy (src/concilium/node/web)
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>Harness {title}</h1>
<form action="/" method="get">{control}</form>
<script>document.title = "inline script ran";</script>
</main></body></html>"""
PAGES = {
    "/labelled": PAGE.format(
        title="labelled", control='<label for="name">Name</label> '
                                  '<input id="name" name="name" type="text">'),
    "/unlabelled": PAGE.format(title="unlabelled",
                               control='<input id="name" name="name" type="text">'),
}


def _certificate(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) and its key, naming `name` like a node's does,
    so that 127.0.0.1 mismatches it: only the pin can make a browser accept it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path.split("?")[0])
        self.send_response(200 if body else 404)
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        data = (body or "<!doctype html><title>not found</title>").encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a refused certificate ends the handshake in the handler thread


@dataclass
class Site:
    url: str
    pin: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    certificate, key = _certificate("harness-node")
    folder = tmp_path_factory.mktemp("site")
    (folder / "cert.pem").write_bytes(certificate)
    (folder / "key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = _Server(("127.0.0.1", 0), _Handler)
    # the handshake in each handler thread, not in the accepting one
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(f"https://127.0.0.1:{server.server_address[1]}", spki_pin(certificate))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[WebDriver]:
    driver = open_browser([site.pin])
    try:
        yield driver
    finally:
        driver.quit()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_spki_pin_is_the_key_not_the_certificate() -> None:
    first, key = _certificate("alpha")
    other, _ = _certificate("alpha")
    pin = spki_pin(first)
    assert len(pin) == 44 and pin.endswith("=")
    assert spki_pin(other) != pin
    # another certificate on the same key has the same pin
    private = serialization.load_pem_private_key(key, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    reissued = x509.load_pem_x509_certificate(first)
    again = (x509.CertificateBuilder().subject_name(reissued.subject)
             .issuer_name(reissued.issuer).public_key(private.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(reissued.not_valid_before_utc)
             .not_valid_after(reissued.not_valid_after_utc)
             .sign(private, hashes.SHA256()))
    assert spki_pin(again.public_bytes(serialization.Encoding.PEM)) == pin


def test_pinned_page_loads_under_its_csp(browser: WebDriver, site: Site) -> None:
    browser.get(f"{site.url}/labelled")
    assert browser.title == "labelled"  # the inline script was blocked by the CSP
    assert browser.find_element(By.TAG_NAME, "h1").text == "Harness labelled"
    assert 0 < navigation_ms(browser, "responseEnd") <= navigation_ms(browser)
    path = screenshot(browser, "harness-labelled")
    assert path.is_file() and path.parent.name == "browser"
    assert _png_size(path) == (1280, 900)  # the viewport's size, as the page fits in it


def test_screenshot_takes_the_page_beyond_the_viewport(site: Site) -> None:
    driver = open_browser([site.pin], width=400, height=60)
    viewport = "return [window.innerHeight, document.documentElement.clientWidth]"
    try:
        driver.get(f"{site.url}/labelled")
        before = driver.execute_script(viewport)
        assert before[0] == 60
        tall = driver.execute_script("return document.documentElement.scrollHeight")
        assert tall > 60
        assert _png_size(screenshot(driver, "harness-short-viewport")) == (400, tall)
        assert driver.execute_script(viewport) == before  # its scrollbar given back
    finally:
        driver.quit()


def test_axe_runs_under_the_csp(browser: WebDriver, site: Site) -> None:
    browser.get(f"{site.url}/labelled")
    assert axe_violations(browser) == []
    browser.get(f"{site.url}/unlabelled")
    violations = axe_violations(browser)
    assert [violation["id"] for violation in violations] == ["label"]
    assert violations[0]["impact"] == "critical"
    assert violations[0]["nodes"] == [{"target": ["#name"]}]
    assert [v["id"] for v in axe_violations(browser, rules=["label"])] == ["label"]
    assert axe_violations(browser, rules=["image-alt"]) == []


def test_tab_moves_focus_to_the_form_control(browser: WebDriver, site: Site) -> None:
    browser.get(f"{site.url}/labelled")
    assert browser.switch_to.active_element.tag_name == "body"
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "name"


def test_wrong_pin_refuses_the_certificate(site: Site) -> None:
    wrong = spki_pin(_certificate("harness-node")[0])
    driver = open_browser([wrong])
    try:
        driver.get(f"{site.url}/labelled")  # Chromium shows its interstitial instead
        assert driver.title != "labelled"
        assert "Harness labelled" not in driver.page_source
        assert "NET::ERR_CERT_AUTHORITY_INVALID" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
