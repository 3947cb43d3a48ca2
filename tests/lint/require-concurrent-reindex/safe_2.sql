-- orch: transaction=false
REINDEX (CONCURRENTLY) TABLE orders;
