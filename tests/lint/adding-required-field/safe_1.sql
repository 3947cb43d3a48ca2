ALTER TABLE customers ADD COLUMN region text;
