FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 alertbot
WORKDIR /app
# Pinned dependencies in a layer of their own: a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY bot ./bot
COPY services ./services
COPY managers ./managers
COPY payments ./payments
COPY migrations ./migrations
RUN pip install --no-deps -e . && mkdir -p /app/logs /app/data && chown -R alertbot:alertbot /app
USER alertbot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"
CMD ["alertbot", "run"]
