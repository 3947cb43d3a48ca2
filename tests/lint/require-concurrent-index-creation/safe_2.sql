CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint);
CREATE INDEX order_lines_order_idx ON order_lines (order_id);
