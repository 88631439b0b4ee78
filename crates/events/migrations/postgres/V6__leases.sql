-- The relay's lease table holds every lease now (the relay, embedded consumer groups).
ALTER TABLE relay_leases RENAME TO leases;
