"""A browser-like session with the server: signed in as admin, with its cookies and CSRF token.

Figure 6 gives its cookies to the WebSocket. Agents are added through the admin's "Add agent"
form, filled in as a browser would submit it: about a tenth of a second each, where
`manage.py agent add` is a Django start-up of more than a second (32 agents for figure 4).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Self

import httpx

from .server import ADMIN_PASSWORD, AgentSpec, Server

ADD_AGENT = "/admin/agents/agent/add/"


class SignInFailed(Exception):
    pass


class FormFields(HTMLParser):
    """The name=value pairs a browser would submit from a page's form controls, defaults included."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None
        self._first_option: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        name = attr.get("name", "")
        if tag == "input" and name and attr.get("type") not in ("submit", "button", "file"):
            if attr.get("type") != "checkbox" or "checked" in attr:
                self.fields[name] = attr.get("value", "on" if attr.get("type") == "checkbox" else "")
        elif tag == "textarea" and name:
            self.fields[name] = ""
        elif tag == "select" and name:
            self._select, self._first_option = name, None
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = attr.get("value", "")
            if "selected" in attr:
                self.fields[self._select] = attr.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select:
            self.fields.setdefault(self._select, self._first_option or "")
            self._select = None


class Browser:
    """Signed in as the admin on entering; closed on leaving."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30)

    async def __aenter__(self) -> Self:
        await self.sign_in()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    async def sign_in(self) -> None:
        """GET the sign-in page for the CSRF cookie, then POST the admin's name and password."""
        await self.http.get("/accounts/login/")
        token = self.http.cookies.get("csrftoken")
        if not token:
            raise SignInFailed("the sign-in page set no csrftoken cookie")
        form = {"csrfmiddlewaretoken": token, "username": "admin", "password": ADMIN_PASSWORD}
        response = await self.http.post("/accounts/login/", data=form, headers={"Referer": self.server.url})
        if response.status_code != 302 or "sessionid" not in self.http.cookies:
            raise SignInFailed(f"signing in as admin failed ({response.status_code})")

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())

    async def add_agent(self, agent: AgentSpec) -> bool:
        """Submit the admin's "Add agent" form (saving it checks the agent); False if it was not accepted."""
        page = await self.http.get(ADD_AGENT)
        if page.status_code != 200:
            return False
        parser = FormFields()
        parser.feed(page.text)
        fields = parser.fields | {
            "name": agent.name,
            "kind": "ollama",
            "base_url": agent.url,
            "concurrency": str(agent.concurrency),
            "enabled": "on",
            "_save": "Save",
        }
        response = await self.http.post(ADD_AGENT, data=fields, headers={"Referer": self.server.url + ADD_AGENT})
        return response.status_code == 302
