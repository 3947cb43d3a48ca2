-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
ALTER TABLE customers RENAME COLUMN nickname TO display_name;
COMMIT;
