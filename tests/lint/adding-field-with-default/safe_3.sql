ALTER TABLE orders ADD COLUMN meta jsonb DEFAULT '{}'::jsonb;
