CREATE TABLE countries (code text, region_id int2);
