-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept.
-- Risky for orch: migrate runs the file as one transaction, so the VALIDATE scans
-- under the lock the NOT VALID add took (squawk --assume-in-transaction agrees)
ALTER TABLE payments ADD CONSTRAINT payments_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_account_fk;
