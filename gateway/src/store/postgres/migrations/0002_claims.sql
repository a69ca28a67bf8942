-- Callisto's PostgreSQL schema, version 2: claims on due deliveries, so
-- that several gateways on one database send each delivery once.
--
-- A gateway claims a pending delivery by setting `lease_until` (Unix ms,
-- the database's clock) while holding its row lock (`FOR UPDATE SKIP
-- LOCKED`): others skip it until the lease expires (its gateway died) or
-- an attempt is recorded (which clears it).
ALTER TABLE deliveries ADD COLUMN lease_until bigint;
