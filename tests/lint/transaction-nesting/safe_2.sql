SAVEPOINT before_audit;
ALTER TABLE orders ADD COLUMN audited boolean;
RELEASE SAVEPOINT before_audit;
