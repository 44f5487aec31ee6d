-- Table globs, excludes, a rename, and two databases with a foreign key
-- between them (loaded in any order: checks are off while loading).
DROP DATABASE IF EXISTS rf_shop;
DROP DATABASE IF EXISTS rf_other;
CREATE DATABASE rf_shop;
CREATE DATABASE rf_other;
USE rf_shop;
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, FOREIGN KEY (customer_id) REFERENCES customers (id));
CREATE TABLE order_lines (order_id INT, line INT, PRIMARY KEY (order_id, line),
  FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE);
CREATE TABLE orders_tmp (id INT PRIMARY KEY);
CREATE TABLE products (id INT PRIMARY KEY);
INSERT INTO customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_50;
INSERT INTO orders SELECT seq, 1 + seq % 50 FROM seq_1_to_200;
INSERT INTO order_lines SELECT 1 + seq % 200, seq FROM seq_1_to_400;
INSERT INTO orders_tmp VALUES (1);
INSERT INTO products VALUES (1);
USE rf_other;
CREATE TABLE audit (id INT PRIMARY KEY, order_id INT,
  FOREIGN KEY (order_id) REFERENCES rf_shop.orders (id));
INSERT INTO audit SELECT seq, seq FROM seq_1_to_100;
CREATE VIEW big_orders AS SELECT o.id FROM rf_shop.orders o WHERE o.id > 100;
