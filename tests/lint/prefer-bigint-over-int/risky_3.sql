ALTER TABLE shipments ADD COLUMN order_id int REFERENCES orders (id);
