-- Callisto's PostgreSQL schema, version 1.
--
-- Records are kept as the same MessagePack bytes the redb engine keeps
-- (store/records.rs), in `record`; the columns beside them are what the
-- indexes and constraints need. Ids, names and tags compare bytewise
-- (COLLATE "C"), as in redb: ids are ULIDs, so id order is creation order.

-- `fanout_cursor` (the sequence number of the last event fanned out),
-- `seal_key_id` (the id of the key the store's secrets are sealed with).
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('fanout_cursor', '0');

-- Sequence numbers of the log. Taken while holding the log's advisory lock,
-- so that they are committed in order: fan-out never skips one committed
-- late. Never reused, even when retention empties the log.
CREATE SEQUENCE events_seq;

CREATE TABLE events (
    seq bigint PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    repository_id text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    occurred_at_ns bigint NOT NULL,
    -- From the id's ULID: what retention compares.
    created_ms bigint NOT NULL,
    dedupe_key text COLLATE "C",
    record bytea NOT NULL
);
CREATE INDEX events_repository ON events (repository_id, seq);
CREATE INDEX events_created ON events (created_ms);

-- A registry's event id (e.g. `distribution:<uuid>`) → the event it made:
-- the same notification sent again is recognised, by the primary key.
CREATE TABLE dedupe (
    key text COLLATE "C" PRIMARY KEY,
    seq bigint NOT NULL
);

CREATE TABLE repositories (
    id text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    registry text COLLATE "C",
    record bytea NOT NULL
);
CREATE INDEX repositories_name ON repositories (name);

CREATE TABLE tags (
    repository_id text COLLATE "C" NOT NULL,
    tag text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (repository_id, tag)
);

-- The marks a manifest deletion leaves on its tags, so that the tag
-- deletions the registry sends next do not repeat its events.
CREATE TABLE tag_marks (
    repository_id text COLLATE "C" NOT NULL,
    tag text COLLATE "C" NOT NULL,
    PRIMARY KEY (repository_id, tag)
);

CREATE TABLE webhooks (
    id text COLLATE "C" PRIMARY KEY,
    repository_id text COLLATE "C" NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX webhooks_repository ON webhooks (repository_id, id);

CREATE TABLE deliveries (
    id text COLLATE "C" PRIMARY KEY,
    kind text NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    webhook_id text COLLATE "C" NOT NULL,
    state text NOT NULL,
    -- When a pending delivery is due (Unix ms); NULL once it is not pending.
    due_ms bigint,
    -- Made by fan-out (not a replay, not a test).
    planned boolean NOT NULL,
    created_ms bigint NOT NULL,
    record bytea NOT NULL
);
-- Each (event, webhook) is planned by fan-out once, whichever gateway plans.
CREATE UNIQUE INDEX deliveries_planned_once ON deliveries (event_id, webhook_id) WHERE planned;
CREATE INDEX deliveries_due ON deliveries (webhook_id, due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);
CREATE INDEX deliveries_event ON deliveries (event_id, id);
CREATE INDEX deliveries_created ON deliveries (created_ms);

CREATE TABLE attempts (
    delivery_id text COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number integer NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
