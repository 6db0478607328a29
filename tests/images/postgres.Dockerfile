# Stand-in for the official postgres image with the interface its documentation gives:
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, data in /var/lib/postgresql/data, pg_isready.
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
    && pg_dropcluster --stop 15 main \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown, as the official image does: a smart one would wait for clients to disconnect.
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
