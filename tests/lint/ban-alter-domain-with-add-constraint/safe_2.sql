ALTER DOMAIN order_ref SET DEFAULT 'none';
