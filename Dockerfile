FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 alertbot
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY services ./services
COPY managers ./managers
COPY payments ./payments
COPY migrations ./migrations
COPY tests ./tests
COPY bench ./bench
RUN pip install -e . && mkdir -p /app/logs /app/data && chown -R alertbot:alertbot /app
USER alertbot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"
CMD ["alertbot", "run"]
