-- Callisto's PostgreSQL schema, version 5: delivery operations per webhook.
--
-- A FIFO webhook sends its oldest pending delivery first, whatever its due
-- time: the claim reads a webhook's pending deliveries in id (creation)
-- order.
CREATE INDEX deliveries_pending_order ON deliveries (webhook_id, id) WHERE due_ms IS NOT NULL;
