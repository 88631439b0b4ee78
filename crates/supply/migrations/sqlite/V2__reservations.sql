-- One row per claim: what the claim holds on a supply. A 'released' row with no supply is a
-- tombstone: the claim was given up before anything was reserved, and nothing ever will be.
CREATE TABLE supply_reservations (
    claim_id   TEXT PRIMARY KEY,
    supply_id  TEXT REFERENCES supplies (id),
    amount     TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'consumed', 'released')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX supply_reservations_supply ON supply_reservations (supply_id);
