-- An order is funded: the wallet hold that reserves its amount on the buyer's account.
ALTER TABLE orders ADD COLUMN hold_id UUID;
