# A CPU image that serves a run folder (or an export of it) with `weitiao serve`.
#
#   docker build -t weitiao .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/demo:/model:ro" -e WEITIAO_API_KEY=change-me weitiao
#   curl -H "Authorization: Bearer change-me" -d '{"inputs": ["a gripping film"]}' localhost:8000/v1/predict
#
# It installs exactly as `make install` does: requirements.lock, wheels only (nothing built from
# source; torch's CPU wheel comes from PyTorch's CPU index, with the same sha256 as in the lock),
# then weitiao with the lock's own setuptools, then converts the bundled models into the image
# (SmolLM2 from GGUF), so a run that names one needs nothing from the network and no conversion at
# start. Not built by the tests (no Docker engine on the CI machine); see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/weitiao
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --only-binary=:all: --no-deps --require-hashes \
        --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
COPY weitiao ./weitiao
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && useradd --create-home weitiao
USER weitiao
RUN TQDM_DISABLE=1 python -m weitiao.models --prepare

EXPOSE 8000
# 0.0.0.0 inside the container (the port is published by `docker run -p`); weitiao itself defaults to 127.0.0.1.
ENTRYPOINT ["weitiao", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
