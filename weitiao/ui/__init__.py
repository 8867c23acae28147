"""`weitiao ui`: the local dashboard (app.py: FastAPI routes; page.html: the one page)."""
