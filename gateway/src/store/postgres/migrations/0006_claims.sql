-- Callisto's PostgreSQL schema, version 6: what is due, and who holds it,
-- in a narrow table of its own.
--
-- Claims updated the wide delivery row (its record holds the request)
-- twice per attempt, each time a new row version with six index entries,
-- and scanned the due index past every delivery in flight. Now a pending
-- delivery has a row in `claims`: its webhook, when it can be claimed, and
-- the lease of the gateway that holds it. A claim moves `due_ms` to the
-- end of its lease, so claims read only what is due, the earliest `due_ms`
-- is also the earliest lease to expire, and a dead gateway's deliveries
-- come back by themselves. `deliveries.due_ms` stays the delivery's own
-- next attempt, no longer indexed: recording an attempt can update the
-- delivery in place (a HOT update), for which pages keep some room.
CREATE TABLE claims (
    delivery_id text COLLATE "C" PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    webhook_id text COLLATE "C" NOT NULL,
    due_ms bigint NOT NULL,
    lease_until bigint
);
CREATE INDEX claims_due ON claims (webhook_id, due_ms, delivery_id);
-- FIFO webhooks claim their oldest pending delivery, by id.
CREATE INDEX claims_order ON claims (webhook_id, delivery_id);
INSERT INTO claims (delivery_id, webhook_id, due_ms, lease_until)
    SELECT id, webhook_id, greatest(due_ms, coalesce(lease_until, 0)), lease_until
    FROM deliveries WHERE due_ms IS NOT NULL;
DROP INDEX IF EXISTS deliveries_leased;
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_pending_order;
ALTER TABLE deliveries DROP COLUMN lease_until;
ALTER TABLE deliveries SET (fillfactor = 80);
