"""`weitiao serve RUN`: a run (or an export of it) behind an HTTP API (FastAPI on uvicorn).

    app.py       the routes: /health, /v1/model, /v1/predict; the API key and body-size guards
    batching.py  dynamic micro-batching: requests that arrive together are scored as one batch
    openai.py    /v1/chat/completions in the OpenAI format (streaming or not), for generative runs
"""
