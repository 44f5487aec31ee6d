-- gh-ost on a listed table: its statements exactly as gh-ost writes them
-- (go/logic/applier.go), with the application writing meanwhile.
DROP DATABASE IF EXISTS ghs_src;
CREATE DATABASE ghs_src;
USE ghs_src;
CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40));
INSERT INTO t SELECT seq, CONCAT('r', seq) FROM seq_1_to_200;
CREATE TABLE u (id INT PRIMARY KEY);
INSERT INTO u VALUES (1);
