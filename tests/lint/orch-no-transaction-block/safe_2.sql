-- orch: transaction=false
VACUUM orders;
ANALYZE orders;
