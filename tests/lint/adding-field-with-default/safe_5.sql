ALTER TABLE orders ADD COLUMN state order_state DEFAULT 'new';
