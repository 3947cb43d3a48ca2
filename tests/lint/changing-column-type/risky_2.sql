ALTER TABLE products ALTER COLUMN weight SET DATA TYPE numeric(10,3) USING weight::numeric;
