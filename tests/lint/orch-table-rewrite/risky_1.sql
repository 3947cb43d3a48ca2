-- orch: transaction=false
VACUUM FULL orders;
