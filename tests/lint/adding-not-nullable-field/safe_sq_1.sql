-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
ALTER TABLE customers ADD COLUMN score int DEFAULT 0 NOT NULL;
ALTER TABLE customers ALTER COLUMN score DROP DEFAULT;
COMMIT;
