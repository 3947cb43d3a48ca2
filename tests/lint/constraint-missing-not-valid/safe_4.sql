ALTER TABLE payments ADD CONSTRAINT payments_ref_key UNIQUE USING INDEX payments_ref_idx;
