ALTER DOMAIN money_amount DROP CONSTRAINT money_amount_nonneg;
ALTER DOMAIN money_amount RENAME TO amount;
ALTER DOMAIN amount OWNER TO CURRENT_USER;
