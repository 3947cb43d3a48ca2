-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
ALTER TABLE measurements DETACH PARTITION measurements_2018 CONCURRENTLY;
