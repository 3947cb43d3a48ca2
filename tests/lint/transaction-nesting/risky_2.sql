ALTER TABLE orders ADD COLUMN audited boolean;
COMMIT;
