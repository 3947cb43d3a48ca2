-- orch: transaction=false
-- each statement commits on its own: the VALIDATE runs after the add's lock is gone
ALTER TABLE payments ADD CONSTRAINT payments_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_account_fk;
