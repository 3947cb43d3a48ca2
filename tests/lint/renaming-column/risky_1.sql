ALTER TABLE customers RENAME COLUMN surname TO family_name;
