"""The approver's web page in a real headless Chromium, against three node processes
over HTTPS (each node's own certificate, pinned by its SPKI hash as a person who
checked the fingerprint would): three approvers review and approve a proposal,
the run completes, the recipient sees the table, its noise intervals and the
chart. Then the page's security (sign-in redirect, cookie flags, CSRF, roles,
escaping), keyboard use and axe-core's accessibility rules, on every page.
Screenshots of each page go to test-artifacts/browser/.

The timing of every page on a node holding 1,000 computations and 10,000 audit
entries is measured and reported in test-artifacts/browser/timings.json (not
asserted: this machine is shared)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from concilium.governance.identity import load_node
from concilium.node.cluster import LocalCluster
from tests.browser import (
    ARTIFACTS,
    axe_violations,
    navigation_ms,
    open_browser,
    screenshot,
    spki_pin,
)

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA = {"columns": {"ward": {"type": "category", "domain": ["north", "south", "east"]},
                      "age": {"type": "int", "low": 0, "high": 100}}}
RULES = {"policy": {"min_cohort": 5, "dp": {"rho": 0.5}}, "budget": {"rho": 2.0}}
QUERY = ("SELECT ward, COUNT(*) AS patients FROM admissions GROUP BY ward "
         "-- <script>alert('x')</script>")


def _frames() -> dict[str, pd.DataFrame]:
    wards = np.array(["north", "south", "east"])
    return {name: pd.DataFrame({"ward": wards[(np.arange(120) * (k + 1)) % 3],
                                "age": (np.arange(120) * 7 + k) % 90})
            for k, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("web"), NAMES)
    try:
        running.register("admissions", _frames(), SCHEMA, RULES)
        yield running
    finally:
        running.close()


def _url(cluster: LocalCluster, name: str, path: str) -> str:
    return f"https://{load_node(cluster.dirs[name]).api_address}{path}"


def _browser(cluster: LocalCluster, name: str) -> WebDriver:
    """A fresh browser (its own cookies) trusting this node's certificate only."""
    pem = load_node(cluster.dirs[name]).tls_certificate_path.read_bytes()
    return open_browser([spki_pin(pem)])


def _sign_in(driver: WebDriver, cluster: LocalCluster, name: str, role: str,
             path: str = "/ui/") -> None:
    driver.get(_url(cluster, name, path))
    assert "/ui/sign-in?next=" in driver.current_url  # no cookie: the sign-in page
    field = driver.find_element(By.ID, "token")
    field.send_keys(cluster.tokens[name][role])
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, 20).until(lambda d: "/ui/sign-in" not in d.current_url)
    _heading(driver, "Inbox" if path == "/ui/" else "Computation")


def _heading(driver: WebDriver, text: str) -> None:
    """Wait until the page (after a navigation a click started) has this heading."""
    def shown(current: WebDriver) -> bool:
        return bool(current.find_element(By.TAG_NAME, "h1").text.startswith(text))
    WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,
                                                  NoSuchElementException)).until(shown)


def _text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "main").text)


def _accessible(driver: WebDriver, page: str) -> None:
    violations = axe_violations(driver)
    assert violations == [], f"{page}: {json.dumps(violations, indent=1)}"


def _no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_three_approvers_approve_in_the_browser_and_the_recipient_sees_the_chart(
        cluster: LocalCluster) -> None:
    identifier = cluster.client("hospital-a", "analyst").request("POST", "/computations", json={
        "query": QUERY, "datasets": ["admissions"], "recipients": ["hospital-a"]})["id"]
    for index, name in enumerate(NAMES):
        driver = _browser(cluster, name)
        try:
            _sign_in(driver, cluster, name, "approver")
            assert driver.find_element(By.TAG_NAME, "h1").text == "Inbox"
            assert "(your decision)" in _text(driver)
            screenshot(driver, f"1-inbox-{name}")
            _accessible(driver, f"inbox at {name}")
            driver.find_element(By.LINK_TEXT, identifier[:12]).click()
            _heading(driver, "Computation")
            text = _text(driver)
            assert "SELECT ward, COUNT(*) AS patients FROM admissions GROUP BY ward" in text
            assert "<script>alert('x')</script>" in text  # shown as text, escaped
            _no_alert(driver)
            for shown in ("The plan: what each owner computes", "min_cohort",
                          "Skellam noise made in MPC, rho=0.5", "Privacy cost",
                          "hospital-a, hospital-b, hospital-c", "rep3: semi-honest"):
                assert shown in text, shown
            budget = driver.find_element(By.XPATH, "//section[@aria-labelledby='budget-heading']"
                                         "//tbody/tr").text.split()
            assert budget[:2] == ["admissions", "0.5"] and "yes" in budget
            screenshot(driver, f"2-review-{name}")
            _accessible(driver, f"review at {name}")
            if index == 0:  # by keyboard: tab to the comment, type, tab to Approve, Enter
                _tab_to(driver, "comment").send_keys("checked the plan and the budget")
                approve = _tab_to(driver, None)
                assert approve.text == "Approve"
                approve.send_keys(Keys.ENTER)
            else:
                driver.find_element(By.ID, "comment").send_keys(f"fine for {name}")
                driver.find_element(By.XPATH, "//button[text()='Approve']").click()
            WebDriverWait(driver, 20).until(lambda d: "done=approved" in d.current_url)
            _heading(driver, "Computation")
            assert "You approved this computation" in _text(driver)
            screenshot(driver, f"3-approved-{name}")
        finally:
            driver.quit()
    cluster.wait([identifier], timeout=300)
    approvals = cluster.client("hospital-a", "analyst").request(
        "GET", f"/computations/{identifier}")["approvals"]
    assert sorted((a["node"], a["decision"]) for a in approvals) == [
        (name, "approve") for name in NAMES]
    assert "checked the plan and the budget" in {a["comment"] for a in approvals}
    driver = _browser(cluster, "hospital-a")
    try:
        _sign_in(driver, cluster, "hospital-a", "recipient")
        driver.find_element(By.LINK_TEXT, identifier[:12]).click()
        _heading(driver, "Computation")
        table = driver.find_element(By.CSS_SELECTOR, "table.result")
        cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
                 for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert sorted(row[0] for row in cells) == ["east", "north", "south"]
        exact = pd.concat(_frames().values())["ward"].value_counts()
        for ward, patients in cells:
            value, width = (float(part) for part in patients.split(" ± "))
            assert abs(value - exact[ward]) <= 4 * width + 1  # noisy, within its interval
        chart = driver.find_element(By.CSS_SELECTOR, "figure svg")
        assert chart.get_attribute("role") == "img"
        assert len(chart.find_elements(By.TAG_NAME, "rect")) == 3
        assert "Download the result as CSV" in _text(driver)
        screenshot(driver, "4-result-hospital-a")
        _accessible(driver, "result")
    finally:
        driver.quit()


def _tab_to(driver: WebDriver, element_id: str | None, limit: int = 80) -> Any:
    """Press TAB until the element with this id (or, with None, the next button after
    the current element) has the focus; the focused element."""
    for _ in range(limit):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        active = driver.switch_to.active_element
        if element_id is not None and active.get_attribute("id") == element_id:
            return active
        if element_id is None and active.tag_name == "button":
            return active
    raise AssertionError(f"TAB never reached {element_id or 'a button'}")


def test_the_pages_refuse_what_they_must(cluster: LocalCluster) -> None:
    identifier = cluster.client("hospital-b", "analyst").request("POST", "/computations", json={
        "query": "SELECT COUNT(*) AS n FROM admissions", "datasets": ["admissions"],
        "recipients": ["hospital-b"]})["id"]
    driver = _browser(cluster, "hospital-b")
    try:
        driver.get(_url(cluster, "hospital-b", f"/ui/computations/{identifier}"))
        assert driver.current_url.endswith(f"/ui/sign-in?next=/ui/computations/{identifier}")
        screenshot(driver, "5-sign-in")
        _accessible(driver, "sign-in")
        _sign_in(driver, cluster, "hospital-b", "approver", f"/ui/computations/{identifier}")
        assert driver.current_url.endswith(f"/ui/computations/{identifier}")  # back to it
        [cookie] = [c for c in driver.get_cookies() if c["name"] == "__Host-concilium-session"]
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
            True, True, "Strict", "/")
        # a form whose CSRF token was taken out is refused, and nothing is signed
        driver.execute_script("document.querySelector('form[action$=\"/approve\"] "
                              "input[name=csrf]').remove()")
        driver.find_element(By.XPATH, "//button[text()='Approve']").click()
        _heading(driver, "Refused")
        assert "CSRF token is missing or wrong" in _text(driver)
        screenshot(driver, "6-csrf-refused")
        _accessible(driver, "refusal")
        assert cluster.client("hospital-b", "analyst").request(
            "GET", f"/computations/{identifier}")["approvals"] == []
        driver.get(_url(cluster, "hospital-b", "/ui/audit"))
        assert "Audit log of hospital-b" in driver.find_element(By.TAG_NAME, "h1").text
        driver.find_element(By.XPATH, "//button[text()='Run verify now']").click()
        WebDriverWait(driver, 20).until(lambda d: "entries check" in d.page_source)
        assert "entries check (hash chain and signatures)" in _text(driver)
        screenshot(driver, "7-audit")
        _accessible(driver, "audit")
    finally:
        driver.quit()
    driver = _browser(cluster, "hospital-b")
    try:  # an analyst's approve request, sent with a valid CSRF token, is refused
        _sign_in(driver, cluster, "hospital-b", "analyst", f"/ui/computations/{identifier}")
        assert "Your decision" not in _text(driver)
        driver.execute_script(
            "const form = document.createElement('form'); form.method = 'post';"
            f"form.action = '/ui/computations/{identifier}/approve';"
            "form.appendChild(document.querySelector('input[name=csrf]').cloneNode());"
            "document.body.appendChild(form); form.submit();")
        _heading(driver, "Refused")
        assert "(analyst) may not approve" in _text(driver)
        assert "Traceback" not in driver.page_source
        screenshot(driver, "8-analyst-refused")
    finally:
        driver.quit()


# -- timings on a busy node --------------------------------------------------------------
def test_every_page_is_timed_on_a_node_with_1000_computations(tmp_path: Path) -> None:
    from tests.web_seed import seeded_node

    with seeded_node(tmp_path, computations=1000, entries=10_000) as node:
        driver = open_browser([node.pin])
        try:
            timings: dict[str, list[float]] = {}
            driver.get(f"{node.url}/ui/sign-in")
            driver.find_element(By.ID, "token").send_keys(node.tokens["approver"])
            driver.find_element(By.ID, "token").send_keys(Keys.ENTER)
            WebDriverWait(driver, 60).until(lambda d: "/ui/sign-in" not in d.current_url)
            pages = {"inbox": "/ui/", "inbox page 10": "/ui/?page=10",
                     "computation": f"/ui/computations/{node.identifiers[-1]}",
                     "audit": "/ui/audit", "audit filtered": "/ui/audit?kind=approval",
                     "sign-in": "/ui/sign-in"}
            for _ in range(3):
                for page, path in pages.items():
                    driver.get(f"{node.url}{path}")
                    assert "Traceback" not in driver.page_source
                    timings.setdefault(page, []).append(navigation_ms(driver))
        finally:
            driver.quit()
    report = {page: {"median_ms": float(np.median(values)), "runs_ms": values}
              for page, values in timings.items()}
    report["_setup"] = {"computations": 1000, "audit_entries": 10_000,
                        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "target_ms": 300, "asserted": False}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v.get("median_ms") for k, v in report.items()}, indent=1))
