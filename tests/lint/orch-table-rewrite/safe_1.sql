-- orch: transaction=false
VACUUM (ANALYZE) orders;
