ALTER TABLE orders ADD COLUMN tags jsonb DEFAULT build_default_tags();
