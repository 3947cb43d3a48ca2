DROP TRIGGER IF EXISTS orders_touch ON orders;
