ALTER TABLE audit_rows ADD CONSTRAINT audit_rows_pkey PRIMARY KEY USING INDEX audit_rows_row_id_idx;
