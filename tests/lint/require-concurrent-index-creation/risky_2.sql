CREATE UNIQUE INDEX orders_ref_idx ON orders (reference);
