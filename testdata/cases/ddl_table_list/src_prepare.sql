-- A job that lists its tables: DDL on other tables is skipped, tables
-- entering the list are copied, tables leaving it are kept on the target
-- under their new name.
DROP DATABASE IF EXISTS ddlt_src;
DROP DATABASE IF EXISTS ddlt_other;
CREATE DATABASE ddlt_src;
CREATE DATABASE ddlt_other;
USE ddlt_src;
CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(20));
INSERT INTO orders SELECT seq, CONCAT('o', seq) FROM seq_1_to_50;
CREATE TABLE items (id INT PRIMARY KEY, order_id INT);
INSERT INTO items SELECT seq, seq FROM seq_1_to_50;
CREATE TABLE other (id INT PRIMARY KEY);
INSERT INTO other VALUES (1);
CREATE TABLE staging (id INT PRIMARY KEY, v VARCHAR(20));
INSERT INTO staging SELECT seq, CONCAT('s', seq) FROM seq_1_to_30;
CREATE TABLE tpl (id INT PRIMARY KEY, v VARCHAR(20), extra INT DEFAULT 1);
INSERT INTO tpl VALUES (1, 't', 2);
