ALTER TABLE customers DROP CONSTRAINT customers_fax_check;
