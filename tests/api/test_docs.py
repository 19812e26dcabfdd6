"""/docs and /redoc render with no internet: every asset comes from the service itself."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in {"src", "href"} and value]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_is_local_and_served(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    links = _links(response.text)
    assert len(links) >= 2  # a script, and a stylesheet or icon
    for link in links:
        assert link.startswith("/"), link
        assert not link.startswith("//"), link
        asset = client.get(link)
        assert asset.status_code == 200, link
        assert asset.content, link
    assert "https://" not in response.text
    assert "http://" not in response.text
    assert "/openapi.json" in response.text


def test_swagger_ui_opens_on_the_documented_operation(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "swagger-ui-bundle.js" in html
    assert '"deepLinking": true' in html
    operation = client.get("/openapi.json").json()["paths"]["/update"]["post"]
    assert operation["summary"] == "Apply one RLHF policy-gradient update"
