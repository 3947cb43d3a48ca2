-- orch: transaction=false
ALTER TABLE measurements DETACH PARTITION measurements_2019 CONCURRENTLY;
