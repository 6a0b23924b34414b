# One image for every role of text2img-queue: web, GPU worker, reaper, Flower, ComfyUI simulator. The container's
# command picks the role: compose.yaml and deploy/kubernetes/ run the Procfile's line for it as
# `bash -c "<line>"` (bash, not sh: it execs a single command, so the role gets the container's signals).
# With no command it serves the web tier. Not built here: tests/unit/test_deploy_files.py keeps it in step
# with the Procfile and the settings.
FROM python:3.11-slim

WORKDIR /app

# The tested versions, pinned, as `make install` does; their own layer, so a code change rebuilds only the rest.
COPY requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

COPY . .
# The project itself, editable like `make install`: the Procfile's lines run from /app (var/ is relative).
# A user of its own (numeric below, so Kubernetes' runAsNonRoot can check it); var/ holds its writable folders,
# which named volumes mounted there start as copies of.
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --editable . \
    && useradd --uid 10001 --user-group --create-home app \
    && mkdir -p var/outputs var/metrics var/comfysim/gpu0 var/comfysim/gpu1 \
    && chown -R app:app var
USER 10001

EXPOSE 8000
CMD ["bash", "-c", "gunicorn --config python:web.gunicorn_conf \"web:create_app()\""]
