-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
REINDEX TABLE CONCURRENTLY orders;
