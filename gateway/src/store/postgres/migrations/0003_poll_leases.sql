-- Callisto's PostgreSQL schema, version 3: poll leases, so that of several
-- gateways on one database one at a time polls a remote repository.
--
-- A gateway about to poll sets `poll_lease_until` (Unix ms, the database's
-- clock) with the repository's row locked; others do not poll it until the
-- lease expires (its gateway died mid-poll) or the poll is recorded (which
-- clears it, and sets when the next poll is due).
ALTER TABLE repositories ADD COLUMN poll_lease_until bigint;
