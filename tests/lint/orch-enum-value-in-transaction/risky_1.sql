-- pg: 11
ALTER TYPE order_state ADD VALUE 'on_hold';
UPDATE orders SET state = 'on_hold' WHERE id = 42;
