-- The order's version when it was claimed: the order is marked claimed only at that version, so a
-- change the buyer made between the claim's read and its mark fails the claim instead of settling
-- an amount the order no longer has. NULL for claims made before this column.
ALTER TABLE claims ADD COLUMN order_version INTEGER;
