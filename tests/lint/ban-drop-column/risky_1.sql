ALTER TABLE customers DROP COLUMN fax_number;
