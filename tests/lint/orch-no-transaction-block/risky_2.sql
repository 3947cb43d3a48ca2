-- orch: transaction=true
-- the file chose a transaction: even alone, REINDEX SCHEMA fails in it
REINDEX SCHEMA CONCURRENTLY app;
