ALTER TYPE postal_address ADD ATTRIBUTE region text;
