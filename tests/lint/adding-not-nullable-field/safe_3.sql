-- pg: 12
-- the NOT NULL helper CHECK of an earlier migration: validated, used, dropped
ALTER TABLE invoices VALIDATE CONSTRAINT invoices_due_on_not_null;
ALTER TABLE invoices ALTER COLUMN due_on SET NOT NULL;
ALTER TABLE invoices DROP CONSTRAINT invoices_due_on_not_null;
