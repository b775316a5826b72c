"""The node's web pages in process (httpx over ASGI, HTTPS base URL so that Secure
cookies flow): sign-in and its cookie, redirects without a session, CSRF on every
form, roles, escaping, refusals as pages, and exact headers. The same pages in a
real Chromium between node processes: tests/test_web_browser.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from concilium.node.web import CONTENT_SECURITY_POLICY
from tests.test_node_api import QUERY, Node, _entry, _publish, _register, make_node

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """One browser's cookie jar against a node's app, in process."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                        base_url="https://node")

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path, **options))

    def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, data=form))

    def sign_in(self, user: str) -> httpx.Response:
        page = self.get("/ui/sign-in")
        token = CSRF.search(page.text)
        assert token is not None
        return self.post("/ui/sign-in", {"csrf": token.group(1), "next": "/ui/",
                                         "token": self.node.tokens[user]})

    def csrf(self, path: str) -> str:
        found = CSRF.search(self.get(path).text)
        assert found is not None
        return found.group(1)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture
def node(tmp_path: Path, signing_consortium: tuple) -> Node:
    return make_node(tmp_path, signing_consortium)


@pytest.fixture
def proposed(node: Node) -> str:
    _register(node)
    for peer in ("hospital-b", "hospital-c"):
        _publish(node, peer, [_entry(peer, {"policy": {"min_cohort": 3},
                                            "approval": {"required": 1}})])
    answer = node.call("POST", "/computations", "dr-lee", json={
        "query": QUERY + " -- <script>alert(1)</script>", "datasets": ["admissions"],
        "recipients": ["hospital-a"]})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


@pytest.fixture
def browser(node: Node) -> Any:
    opened = Browser(node)
    yield opened
    opened.close()


def test_a_page_without_a_session_redirects_to_sign_in(browser: Browser) -> None:
    for path in ("/ui/", "/ui/audit", "/ui/computations/abc"):
        answer = browser.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/sign-in?next={path}"
    assert browser.get("/ui").headers["location"] == "/ui/"


def test_sign_in_sets_a_strict_session_cookie_and_every_page_a_strict_policy(
        browser: Browser) -> None:
    page = browser.get("/ui/sign-in")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY == (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert '<label for="token">API token</label>' in page.text
    signed = browser.sign_in("officer-1")
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/"
    cookie = [c for c in signed.headers.get_list("set-cookie")
              if c.startswith("__Host-concilium-session=")]
    assert len(cookie) == 1
    flags = {part.strip().lower() for part in cookie[0].split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    assert not any(flag.startswith("domain") for flag in flags)
    token = browser.node.tokens["officer-1"]
    inbox = browser.get("/ui/")
    assert inbox.status_code == 200 and "Signed in as officer-1 (approver)" in inbox.text
    assert token not in inbox.text and token not in cookie[0]


def test_a_wrong_token_or_a_forged_sign_in_form_is_refused(browser: Browser) -> None:
    csrf = browser.csrf("/ui/sign-in")
    wrong = browser.post("/ui/sign-in", {"csrf": csrf, "token": "not-a-token"})
    assert wrong.status_code == 401 and "unknown API token" in wrong.text
    forged = browser.post("/ui/sign-in", {"csrf": "guessed", "token": "x"})
    assert forged.status_code == 403 and "sign-in form was not sent from this" in forged.text


def test_the_approver_reviews_and_approves_with_a_signed_comment(
        browser: Browser, node: Node, proposed: str) -> None:
    browser.sign_in("officer-1")
    inbox = browser.get("/ui/")
    assert f'<a href="/ui/computations/{proposed}">{proposed[:12]}</a>' in inbox.text
    assert "(your decision)" in inbox.text
    page = browser.get(f"/ui/computations/{proposed}")
    assert page.status_code == 200
    text = page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    for shown in ("The plan: what each owner computes", "hospital-a, hospital-b, hospital-c",
                  "min_cohort", "every released cell needs at least 3 rows",
                  "rep3: semi-honest", "Still waiting for: hospital-a (1)",
                  '<label for="comment">'):
        assert shown in text, shown
    csrf = CSRF.search(text)
    assert csrf is not None
    approved = browser.post(f"/ui/computations/{proposed}/approve",
                            {"csrf": csrf.group(1), "comment": "<b>fine</b> by me"})
    assert approved.status_code == 303
    assert approved.headers["location"] == f"/ui/computations/{proposed}?done=approved"
    [approval] = node.context.store.approvals(proposed)
    assert (approval.approver, approval.decision, approval.comment) == (
        "officer-1", "approve", "<b>fine</b> by me")
    after = browser.get(approved.headers["location"]).text
    assert "You approved this computation" in after and "valid signature" in after
    assert "&lt;b&gt;fine&lt;/b&gt; by me" in after
    kinds = [e.kind for e in node.context.audit.entries()]
    assert kinds[-1] == "approval"


def test_a_form_without_its_csrf_token_is_refused(browser: Browser, node: Node,
                                                  proposed: str) -> None:
    browser.sign_in("officer-1")
    for form in ({}, {"csrf": "guessed"}):
        refused = browser.post(f"/ui/computations/{proposed}/approve", form)
        assert refused.status_code == 403 and "CSRF token is missing or wrong" in refused.text
    assert node.context.store.approvals(proposed) == []
    assert browser.post("/ui/sign-out", {}).status_code == 403


def test_an_analyst_cannot_approve_and_a_recipient_sees_only_results(
        browser: Browser, node: Node, proposed: str) -> None:
    browser.sign_in("dr-lee")
    page = browser.get(f"/ui/computations/{proposed}")
    assert page.status_code == 200 and "Your decision" not in page.text
    refused = browser.post(f"/ui/computations/{proposed}/approve",
                           {"csrf": browser.csrf("/ui/"), "comment": ""})
    assert refused.status_code == 403
    assert "&#39;dr-lee&#39; (analyst) may not approve" in refused.text
    assert "Traceback" not in refused.text and node.context.store.approvals(proposed) == []
    audit = browser.get("/ui/audit")
    assert audit.status_code == 403 and "may not read audit" in audit.text
    other = Browser(node)
    try:
        other.sign_in("ministry")
        hidden = other.get(f"/ui/computations/{proposed}")
        assert hidden.status_code == 403
        assert "this node does not receive its result, or it has not completed" in hidden.text
        assert proposed[:12] not in other.get("/ui/").text
    finally:
        other.close()


def test_the_audit_page_filters_and_an_unknown_page_is_a_page(
        browser: Browser, proposed: str) -> None:
    browser.sign_in("officer-1")
    page = browser.get("/ui/audit", params={"kind": "proposal"})
    assert page.status_code == 200
    assert re.findall(r"<td>(\w+)</td><td class=\"body\">", page.text) == ["proposal"]
    assert "1 entry matching" in page.text
    mine = browser.get("/ui/audit", params={"computation": proposed[:10]})
    assert "1 entry matching" in mine.text
    bad = browser.get("/ui/audit", params={"computation": "'; DROP TABLE"})
    assert bad.status_code == 403 and "hexadecimal" in bad.text
    verified = browser.post("/ui/audit/verify", {"csrf": CSRF.search(page.text).group(1)})
    assert verified.status_code == 200
    # the dataset's registration and the proposal
    assert "verify: all 2 entries check (hash chain and signatures)." in verified.text
    missing = browser.get("/ui/nothing-here")
    assert missing.status_code == 404 and "there is no such page" in missing.text
    assert missing.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_style_sheet_is_served_and_nothing_else_is_loaded(browser: Browser,
                                                             tmp_path: Path) -> None:
    sheet = browser.get("/ui/static/style.css")
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
    page = browser.get("/ui/sign-in").text
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["/ui/static/style.css", "#main"]


def _complete(node: Node, identifier: str, result: dict[str, Any]) -> None:
    """The computation as a finished run leaves it at a recipient node."""
    node.context.store.update(identifier, status="completed", progress=1.0, result=result)


def test_a_recipient_sees_the_result_its_suppressions_and_downloads_it(
        browser: Browser, node: Node, proposed: str) -> None:
    _complete(node, proposed, {
        "threat_model": {"summary": "rep3: semi-honest, honest majority"},
        "columns": ["condition", "n"], "rows": [["asthma", 12], ["copd", 30]],
        "suppressed": [{"group": {"condition": "<i>rare</i>"}, "rule": "fewer than 3 rows"}]})
    browser.sign_in("ministry")
    assert f'href="/ui/computations/{proposed}"' in browser.get("/ui/").text
    page = browser.get(f"/ui/computations/{proposed}").text
    assert "completed: the result is with its recipients" in page
    assert re.findall(r"<td>(\w+)</td><td>(\d+)</td>", page) == [("asthma", "12"),
                                                                 ("copd", "30")]
    assert "Suppressed: {&#39;condition&#39;: &#39;&lt;i&gt;rare&lt;/i&gt;&#39;}: fewer than 3 " \
           "rows" in page
    assert page.count("<rect ") == 2 and '<title id="chart-title">n by group</title>' in page
    download = browser.get(f"/ui/computations/{proposed}/result.csv")
    assert download.status_code == 200 and download.headers["content-type"].startswith(
        "text/csv")
    assert download.headers["content-disposition"] == (
        f'attachment; filename="result-{proposed[:12]}.csv"')
    assert download.text == ("condition,n\nasthma,12\ncopd,30\n"
                             "suppressed: {'condition': '<i>rare</i>'}: fewer than 3 rows\n")
    deliveries = [e for e in node.context.audit.entries() if e.kind == "delivery"]
    assert [e.body["user"] for e in deliveries] == ["ministry", "ministry"]  # page, CSV


def test_an_evaluation_result_draws_the_roc_curve_through_its_released_points(
        browser: Browser, node: Node, proposed: str) -> None:
    _complete(node, proposed, {
        "threat_model": None, "columns": ["metric", "value"],
        "rows": [["accuracy", 0.91], ["roc_curve", [[0.25, 0.4, 0.95], [0.5, 0.1, 0.8]]]],
        "suppressed": [{"group": "roc_curve point at p > 0.75",
                        "rule": "a band beside it has fewer than 10 rows"}]})
    browser.sign_in("ministry")
    page = browser.get(f"/ui/computations/{proposed}").text
    assert page.count('r="4" fill="#b5462f"') == 2  # the two released points, no others
    assert ("ROC curve through the released points: at p &gt; 0.25, false positive rate "
            "0.4, true positive rate 0.95; at p &gt; 0.5, false positive rate 0.1, true "
            "positive rate 0.8") in page
    assert "Suppressed: roc_curve point at p &gt; 0.75: a band beside it has fewer" in page
