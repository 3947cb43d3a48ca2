ALTER TABLE products ALTER COLUMN sku TYPE varchar(64);
