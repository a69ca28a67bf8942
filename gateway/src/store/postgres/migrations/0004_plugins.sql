-- Callisto's PostgreSQL schema, version 4: installed plugins, so that a
-- plugin uploaded through one gateway is loaded by every gateway on the
-- database (each hears of it by `callisto_plugins` and loads it; one
-- starting later loads what is here). Built-in plugins are not kept.
CREATE TABLE plugins (
    name text COLLATE "C" PRIMARY KEY,
    -- Hex SHA-256 of `wasm`: what a gateway compares with what it loaded.
    sha256 text NOT NULL,
    wasm bytea NOT NULL,
    updated_ms bigint NOT NULL
);
