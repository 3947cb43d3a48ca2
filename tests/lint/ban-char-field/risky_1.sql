CREATE TABLE countries (code char(2), name text);
