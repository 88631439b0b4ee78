-- One row per claim: what the claim holds on a supply. A 'released' row with no supply is a
-- tombstone: the claim was given up before anything was reserved, and nothing ever will be.
CREATE TABLE supply_reservations (
    claim_id   UUID PRIMARY KEY,
    supply_id  UUID REFERENCES supplies (id),
    amount     NUMERIC NOT NULL CHECK (amount >= 0),
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'consumed', 'released')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX supply_reservations_supply ON supply_reservations (supply_id);
