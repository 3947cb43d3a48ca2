-- pg: 12
-- a constraint validated here but added elsewhere is no proof by its name alone: it is not dropped after use
ALTER TABLE invoices VALIDATE CONSTRAINT invoices_due_on_not_null;
ALTER TABLE invoices ALTER COLUMN due_on SET NOT NULL;
