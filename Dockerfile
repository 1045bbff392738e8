# Multi-stage build of the imagejobs binary.
FROM swift:6.2-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product imagejobs \
    && cp "$(swift build -c release --show-bin-path)/imagejobs" /usr/local/bin/imagejobs

FROM swift:6.2-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 zlib1g ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home imagejobs
COPY --from=build /usr/local/bin/imagejobs /usr/local/bin/imagejobs
USER imagejobs
ENTRYPOINT []
CMD ["imagejobs", "worker"]
