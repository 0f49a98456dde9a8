# The server's image, built from requirements.txt; nothing is downloaded when it runs (the
# built-in OCR's models are inside the rapidocr wheel). Alone it runs `manage.py serve`
# (web and worker, SQLite in /data):
#   docker build -t image-to-text . && docker run -p 8000:8000 -v image-to-text:/data image-to-text
# compose.yaml runs web and worker as separate services on PostgreSQL and Redis.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

# pg_dump, for `manage.py backup` on PostgreSQL (bookworm's: PostgreSQL 15).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --requirement requirements.txt

COPY . .
RUN useradd --system --uid 10001 --home-dir /app aiserver \
    && mkdir -p /data \
    && chown aiserver /data
USER aiserver
VOLUME /data
EXPOSE 8000

CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
