CREATE INDEX CONCURRENTLY orders_placed_at_idx ON orders (placed_at);
ALTER TABLE orders ADD COLUMN audited boolean;
