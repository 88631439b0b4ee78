-- An order's holds, of any status (settlement reads them by order on every claim): without this index
-- that read scanned every hold.
CREATE INDEX wallet_holds_order ON wallet_holds (order_id, id DESC);
