"""`GET /docs`: Swagger UI for `/openapi.json`, served from the `swagger-ui-bundle-v2` package.

Nothing comes from a CDN, so the page works offline: the page and its start-up script are here,
Swagger UI's dist files (`swagger-ui-bundle.js`, `swagger-ui.css`) are mounted from the package
at `/docs/assets/` (`ASSETS`). The page sends its own Content-Security-Policy: scripts and
connections to this origin only (Swagger UI's "Try it out" calls the API here), no inline
script, styles from here plus the inline styles Swagger UI sets, no framing. The online
validator badge is off (`validatorUrl: null`), so the page never calls out. Paste a token with
the Authorize button; it is kept in the page's memory only.
"""

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = StaticFiles(directory=str(swagger_ui_path))

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Todo API docs</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="stylesheet" href="/docs/assets/index.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

_SCRIPT = """\
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayOperationId: false,
  displayRequestDuration: true,
  persistAuthorization: false,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def page(request: Request) -> HTMLResponse:
    """GET /docs -> the Swagger UI page."""
    return HTMLResponse(_PAGE, headers=_HEADERS)


async def script(request: Request) -> Response:
    """GET /docs/init.js -> the script that starts Swagger UI on `/openapi.json`."""
    return Response(_SCRIPT, media_type="text/javascript", headers=_HEADERS)
