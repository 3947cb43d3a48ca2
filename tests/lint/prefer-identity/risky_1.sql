CREATE TABLE coupons (id serial, code text);
