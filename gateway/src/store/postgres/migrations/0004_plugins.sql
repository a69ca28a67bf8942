-- Callisto's PostgreSQL schema, version 4: installed plugins (and an index
-- of claimed deliveries, below), so that a
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

-- The claimed deliveries, by webhook and when their lease ends: what a
-- claim reads to know when a dead gateway's claims become claimable.
CREATE INDEX deliveries_leased ON deliveries (webhook_id, lease_until) WHERE lease_until IS NOT NULL;
