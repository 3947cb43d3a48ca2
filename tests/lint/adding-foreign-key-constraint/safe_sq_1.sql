-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
BEGIN;
CREATE TABLE receipts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  payment_id bigint,
  CONSTRAINT receipts_payment_fk FOREIGN KEY (payment_id) REFERENCES payments (id)
);
COMMIT;
