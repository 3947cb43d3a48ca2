ALTER TABLE audit_rows ADD PRIMARY KEY (row_id);
