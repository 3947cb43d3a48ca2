-- orch: transaction=false
DROP INDEX CONCURRENTLY IF EXISTS orders_customer_idx;
