ALTER TABLE visits ADD COLUMN left_at timestamp without time zone;
