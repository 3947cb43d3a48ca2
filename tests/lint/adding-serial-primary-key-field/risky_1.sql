ALTER TABLE audit_rows ADD COLUMN row_id bigserial PRIMARY KEY;
