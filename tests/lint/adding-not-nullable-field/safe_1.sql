-- orch: transaction=false
ALTER TABLE customers ADD CONSTRAINT customers_email_nn CHECK (email IS NOT NULL) NOT VALID;
ALTER TABLE customers VALIDATE CONSTRAINT customers_email_nn;
ALTER TABLE customers ALTER COLUMN email SET NOT NULL;
