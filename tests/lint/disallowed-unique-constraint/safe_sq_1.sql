-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
CREATE TABLE vouchers (id bigint PRIMARY KEY, code text NOT NULL);
ALTER TABLE vouchers ADD CONSTRAINT vouchers_code_key UNIQUE (code);
COMMIT;
