# Stand-in for the official python image: Debian bookworm's python3 with venv, trusting the
# local CA certificates copied beside this file (a TLS-intercepting proxy may stand before PyPI).
ARG BASE
FROM ${BASE}
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# pip bundles its own CA list; point it at the system one, which now holds the local CAs.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
