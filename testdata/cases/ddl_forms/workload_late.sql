-- Replayed late (Ferry stopped meanwhile).
USE ddlf_src;
INSERT INTO a VALUES (20, 'late', 7);
ALTER TABLE a DROP COLUMN n;
INSERT INTO a VALUES (21, 'late after');
RENAME TABLE made3 TO made4;
INSERT INTO made4 VALUES (4, 'p');
DROP TABLE liked2;
DROP VIEW va;
