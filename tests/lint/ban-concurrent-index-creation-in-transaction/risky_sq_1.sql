-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
CREATE INDEX CONCURRENTLY orders_placed_idx ON orders (placed_at);
COMMIT;
