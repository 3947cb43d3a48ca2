ALTER DOMAIN money_amount ADD CONSTRAINT money_amount_nonneg CHECK (VALUE >= 0);
