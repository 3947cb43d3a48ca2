-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
SELECT 1;
COMMIT;
