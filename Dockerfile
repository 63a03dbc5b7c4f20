# One image for every AI Bridge process: `aibridge config-service|bridge|proxy|console|migrate|...`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY aibridge ./aibridge
COPY config_service ./config_service
COPY data_plane ./data_plane
COPY console ./console
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/aibridge --create-home aibridge
USER aibridge
ENV AIBRIDGE_DATA_DIR=/var/lib/aibridge AIBRIDGE_LOG_FORMAT=json
ENTRYPOINT ["aibridge"]
CMD ["--help"]
