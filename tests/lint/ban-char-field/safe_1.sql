CREATE TABLE countries (code text, name text);
