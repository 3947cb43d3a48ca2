-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
CREATE TABLE order_notes (id bigint PRIMARY KEY, order_id bigint);
CREATE INDEX order_notes_order_idx ON order_notes (order_id);
COMMIT;
