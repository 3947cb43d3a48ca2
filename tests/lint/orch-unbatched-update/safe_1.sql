UPDATE customers SET newsletter = false WHERE id BETWEEN 1 AND 5000;
