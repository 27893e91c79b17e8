"""The documentation keeps up with the code: the README stays a landing page whose links lead
somewhere, and docs/routes.md lists exactly the app's routes (the console's HTML pages as one row; HEAD,
which every GET route answers, as its GET)."""

import re
from pathlib import Path

import falcon.inspect

from payapi.app import create_app
from payapi.infra.config import Settings
from tests.support.config import AUTH_SECRETS, SERVICE_KEY

ROOT = Path(__file__).resolve().parent.parent.parent


def documented_routes():
    """{(method, path)} of docs/routes.md's table: each row's route column, `GET /a`, `/b` sharing the method."""
    routes = set()
    for line in (ROOT / "docs" / "routes.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 4 or not cells[2].startswith("`"):
            continue
        method = None
        for code in re.findall(r"`([^`]+)`", cells[2]):
            words = code.split()
            if len(words) == 2:
                method, path = words
            else:
                (path,) = words
            routes.add((method, path.split("?")[0].rstrip("/") or "/"))
    return routes


def served_methods():
    """{path: {method}} of the app's routes (falcon's own responders for the rest left out)."""
    app = create_app(Settings(auth_secrets=AUTH_SECRETS, service_key=SERVICE_KEY), None, None)
    return {
        route.path: {m.method for m in route.methods if not m.internal} for route in falcon.inspect.inspect_routes(app)
    }


def app_routes():
    """{(method, path)} the app routes, the console's HTML pages as (None, "/ops"), HEAD folded into GET."""
    routes = set()
    for path, methods in served_methods().items():
        if path == "/ops" or (path.startswith("/ops/") and not path.startswith("/ops/api/")):
            routes.add((None, "/ops"))
            continue
        routes.update((method, path) for method in methods if not (method == "HEAD" and "GET" in methods))
    return routes


def test_every_get_route_answers_head_as_the_routes_table_says():
    assert "also answers `HEAD`" in (ROOT / "docs" / "routes.md").read_text(encoding="utf-8")
    served = served_methods()
    assert [path for path, methods in served.items() if "GET" in methods and "HEAD" not in methods] == []


def test_the_routes_table_lists_exactly_the_routes_the_app_serves():
    documented, served = documented_routes(), app_routes()
    assert documented - served == set(), "in docs/routes.md but not served"
    assert served - documented == set(), "served but missing from docs/routes.md"


def test_the_readme_is_a_landing_page_whose_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 10 * 1024
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert local and all((ROOT / link).is_file() for link in local), local
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"docs/{page.name} is not linked from the README"
