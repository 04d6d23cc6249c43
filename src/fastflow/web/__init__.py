"""The web door: REST routes, the HTTP server and the dashboard's static files."""

from pathlib import Path

#: The dashboard's files (index.html, app.js, style.css), served at ``/``.
STATIC_DIR = Path(__file__).resolve().parent / "static"
