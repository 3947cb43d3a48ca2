ALTER TABLE invoices
  ADD COLUMN gross numeric GENERATED ALWAYS AS (net * 1.2) STORED;
