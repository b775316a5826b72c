"""The node's web pages (``/ui``): sign-in, inbox, a computation's review and result,
the audit log. Modules: ``sessions`` (cookies and CSRF), ``views`` (what each page
shows, who may see it), ``charts`` (inline SVG), ``pages`` (the routes)."""

from concilium.node.web.pages import CONTENT_SECURITY_POLICY, error_page, router

__all__ = ["CONTENT_SECURITY_POLICY", "error_page", "router"]
