-- The claim request's statements as walletd runs them for a claim that wins (captured with
-- pg_stat_statements; scripts/bench.sh prints them beside the run), replayed by pgbench on the
-- database walletd's claim run left behind. pgbench's one extra statement picks the order and
-- the shopper (two primary-key lookups in tables bench.sh fills); the claim row gets a fresh
-- order id so that the live-claim index never refuses it, and the order row is updated in place.
-- The events' JSON is written with ~ for its colons (pgbench would read :name as a variable).
\set n random(1, :orders)
\set s random(1, :shoppers)
SELECT o.id AS oid, s.user_id AS sid FROM bench_orders o, bench_shoppers s WHERE o.n = :n AND s.n = :s \gset
-- The order and its items (OrderClient::get), the shopper's supply (SupplyClient::find_available).
SELECT id, user_id, currency, amount, status, claim_id, version, created_at, updated_at, hold_id FROM orders WHERE id = :oid;
SELECT order_id, id, product_id, product_name, price, quantity FROM order_items WHERE order_id = ANY(ARRAY[:oid]::uuid[]) ORDER BY order_id, position;
SELECT id FROM supplies WHERE user_id = :sid AND currency = 'USDC' AND status = 'active' AND amount - reserved >= 1 ORDER BY amount - reserved DESC, id LIMIT 1;
-- The claim and its event.
BEGIN;
INSERT INTO claims (id, order_id, user_id, buyer_id, supply_id, currency, amount, status, failure_reason, claimed_at, processed_at, updated_at, version, order_version) VALUES (gen_random_uuid(), gen_random_uuid(), :sid, :sid, gen_random_uuid(), 'USDC', 12.5, 'pending', NULL, now(), NULL, now(), 1, 1);
INSERT INTO outbox (seq, id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, actor_id, data) SELECT nextval('outbox_seq_seq'), gen_random_uuid(), 'order.claimed', 1, 'order-events', :oid, now(), 'local', 'bench', :sid, replace('{"id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a11","order_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a12","user_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a13","status"~"pending","failure_reason"~null,"currency"~"USDC","amount"~"12.500000","supply_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a14","claimed_at"~"2026-11-26T12~00~00.123456Z","processed_at"~null,"version"~1}', '~', chr(58))::jsonb FROM (SELECT pg_current_xact_id() OFFSET 0) AS xact_id_first;
END;
-- The order marked claimed at the version read, with its event (OrderClient::mark_claimed).
BEGIN;
SELECT id, user_id, currency, amount, status, claim_id, version, created_at, updated_at, hold_id FROM orders WHERE id = :oid FOR UPDATE;
SELECT order_id, id, product_id, product_name, price, quantity FROM order_items WHERE order_id = ANY(ARRAY[:oid]::uuid[]) ORDER BY order_id, position;
UPDATE orders SET amount = amount, status = 'claimed', claim_id = gen_random_uuid(), version = version + 1, updated_at = now() WHERE id = :oid;
INSERT INTO outbox (seq, id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, actor_id, data) SELECT nextval('outbox_seq_seq'), gen_random_uuid(), 'order.updated', 1, 'order-events', :oid, now(), 'local', 'bench', :sid, replace('{"id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a12","user_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a15","currency"~"USDC","amount"~"12.500000","status"~"claimed","items"~[{"id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a16","product_id"~"sku-1","product_name"~"bench","price"~"12.500000","quantity"~1}],"claim_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a11","hold_id"~"019ac1d2-47a5-7f31-9c3e-2b1f4f0f9a17","version"~2,"created_at"~"2026-11-26T12~00~00.123456Z","updated_at"~"2026-11-26T12~00~00.223456Z"}', '~', chr(58))::jsonb FROM (SELECT pg_current_xact_id() OFFSET 0) AS xact_id_first;
END;
