-- orch: transaction=false
REINDEX INDEX CONCURRENTLY orders_customer_idx;
