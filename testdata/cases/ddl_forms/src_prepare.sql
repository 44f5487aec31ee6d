-- DDL in the forms people and tools write it: qualified names without
-- backquotes from a session without a default database, comments, mixed
-- case, IF [NOT] EXISTS, multi-table RENAME and DROP, ALTER ... RENAME TO,
-- CREATE ... LIKE, CREATE ... SELECT (logged as CREATE + rows in ROW
-- format), TRUNCATE, indexes, conditional comments.
DROP DATABASE IF EXISTS ddlf_src;
CREATE DATABASE ddlf_src;
USE ddlf_src;
CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20));
INSERT INTO a VALUES (1, 'before the load');
CREATE TABLE b (id INT PRIMARY KEY, v VARCHAR(20));
CREATE TABLE c (id INT PRIMARY KEY);
CREATE TABLE gone1 (id INT);
CREATE TABLE gone2 (id INT);
CREATE TABLE tpl (id INT PRIMARY KEY, n INT DEFAULT 3);
