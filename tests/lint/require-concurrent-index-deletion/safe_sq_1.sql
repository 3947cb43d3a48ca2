-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
DROP INDEX CONCURRENTLY IF EXISTS orders_placed_idx;
