-- orch: transaction=false
BEGIN;
CREATE INDEX CONCURRENTLY orders_placed_at_idx ON orders (placed_at);
COMMIT;
