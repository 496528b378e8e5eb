# One image per service, all from this file; build from the repository root:
#   docker build --build-arg SERVICE=asr -t activecall-asr .
# SERVICE is one of sip-edge, media, asr, llm, tts, api. The image holds shared/ and that service only
# (the test drivers in testing/ are never installed here). deploy/docker-compose.yml builds all six.
FROM python:3.11-slim AS build
ARG SERVICE
RUN case "$SERVICE" in sip-edge|media|asr|llm|tts|api) ;; \
      *) echo "build with --build-arg SERVICE=sip-edge|media|asr|llm|tts|api (got '$SERVICE')" >&2; exit 1 ;; \
    esac
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/constraints.txt
COPY shared /src/shared
COPY services/${SERVICE} /src/services/${SERVICE}
# The entrypoint is the service's own script under one name, so the final stage needs no SERVICE.
RUN pip install --no-cache-dir -c /src/constraints.txt /src/shared /src/services/${SERVICE} \
    && ln -s activecall-${SERVICE} /opt/venv/bin/activecall-service && mkdir -p /opt/models

# asr only: the end-of-turn models ship in these wheels; their own dependencies are not needed
# (docs/turns.md). A Vosk English model can be baked in at build time:
#   --build-arg VOSK_MODEL_URL=https://.../vosk-model-small-en-us-0.15.zip
ARG VOSK_MODEL_URL=""
RUN if [ "$SERVICE" = asr ]; then \
      pip install --no-cache-dir --no-deps pipecat-ai==1.14.0 silero-vad==6.2.3; \
    fi
RUN if [ "$SERVICE" = asr ] && [ -n "$VOSK_MODEL_URL" ]; then \
      python -c "import sys, urllib.request, zipfile, io; z = zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(sys.argv[1]).read())); z.extractall(\"/opt/models\")" "$VOSK_MODEL_URL" \
      && ln -s /opt/models/$(ls /opt/models | head -1) /opt/models/vosk; \
    fi

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app activecall && mkdir -p /app && chown activecall /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ACTIVECALL_CONFIG=/etc/active-call/active-call.toml \
    ACTIVECALL_STATUS_FILE=/tmp/activecall-status.port
WORKDIR /app
USER activecall
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["activecall", "healthcheck"]
ENTRYPOINT ["activecall-service"]
