-- No default database until the USE below.
INSERT INTO ddlf_src.a VALUES (2, 'before add');
ALTER TABLE ddlf_src.a ADD COLUMN n INT DEFAULT 1;
INSERT INTO ddlf_src.a VALUES (3, 'after add', 5);
/* a leading comment */ alter /* inline */ table ddlf_src . b add column w int default 9 -- trailing
;
INSERT INTO ddlf_src.b VALUES (1, 'b1', 2);
INSERT INTO ddlf_src.c VALUES (1), (2);
TRUNCATE TABLE ddlf_src.c;
INSERT INTO ddlf_src.c VALUES (3);
truncate ddlf_src.c;
INSERT INTO ddlf_src.c VALUES (4);
CREATE TABLE ddlf_src.made (id INT PRIMARY KEY, v VARCHAR(5));
INSERT INTO ddlf_src.made VALUES (1, 'm');
CREATE TABLE IF NOT EXISTS ddlf_src.made (id INT);
CREATE TABLE ddlf_src.liked LIKE ddlf_src.tpl;
INSERT INTO ddlf_src.liked (id) VALUES (1);
RENAME TABLE ddlf_src.made TO ddlf_src.made2, ddlf_src.liked TO ddlf_src.liked2;
INSERT INTO ddlf_src.made2 VALUES (2, 'n');
ALTER TABLE ddlf_src.made2 RENAME TO ddlf_src.made3;
INSERT INTO ddlf_src.made3 VALUES (3, 'o');
DROP TABLE IF EXISTS ddlf_src.gone1, ddlf_src.gone2, ddlf_src.never_was;
-- Mixed case, backquotes and a default database from here on.
USE ddlf_src;
Create Table `q``uote` (Id Int Primary Key, `sp ace` VarChar(9));
INSERT INTO `q``uote` VALUES (1, 'q');
CREATE TABLE ctas AS SELECT id, v FROM a WHERE id > 1;
INSERT INTO ctas VALUES (10, 'x');
CREATE TABLE ctas2 (extra INT DEFAULT 4) SELECT id FROM b;
/*!40000 ALTER TABLE a DISABLE KEYS */;
ALTER TABLE a MODIFY v VARCHAR(40), ADD INDEX (n);
UPDATE a SET v = 'widened to forty chars' WHERE id = 1;
CREATE INDEX bi ON b (w);
DROP INDEX bi ON b;
/*M!100100 ALTER TABLE c ADD COLUMN m INT DEFAULT 6 */;
INSERT INTO c VALUES (5, 7);
CREATE OR REPLACE VIEW va AS SELECT id, v FROM ddlf_src.a;
