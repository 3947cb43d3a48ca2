UPDATE customers SET newsletter = false;
