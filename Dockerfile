# syntax=docker/dockerfile:1
# One image for every Berth service; the command picks it:
#   berth registry --host 0.0.0.0 --port 8000     (the default)
#   berth serve --host 0.0.0.0 --port 8001
#   berth db upgrade · berth token bootstrap --dir /run/berth · berth gc
# Build stage: everything installs from wheels into a virtualenv that is copied whole into the
# runtime stage, so the runtime image holds no pip cache, no sources and no build tools.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/berth
COPY . .
# Not editable and no dev extras: the image carries the package, not the checkout.
RUN /opt/berth/bin/pip install --constraint constraints.txt . \
    && find /opt/berth -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# A fixed, unprivileged uid: files it writes into volumes (tokens, temporary downloads) are
# owned the same way on every start. /run/berth exists here so a named volume mounted on it
# inherits this ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /home/berth --create-home berth \
    && install -d -o berth -g berth -m 0700 /run/berth
COPY --from=build /opt/berth /opt/berth
ENV PATH=/opt/berth/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER berth
WORKDIR /home/berth
EXPOSE 8000 8001
ENTRYPOINT ["berth"]
CMD ["registry", "--host", "0.0.0.0", "--port", "8000"]
