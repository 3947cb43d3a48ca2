ALTER TABLE orders ADD COLUMN jitter float8 DEFAULT random();
