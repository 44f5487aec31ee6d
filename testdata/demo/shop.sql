-- Demo data: a small shop, generated with MariaDB's SEQUENCE engine
-- (about 380k rows in four tables, with composite, unique and no keys).
DROP DATABASE IF EXISTS shop;
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;

CREATE TABLE customers (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(120) NOT NULL UNIQUE,
  name VARCHAR(100) NOT NULL,
  country CHAR(2) NOT NULL,
  balance DECIMAL(12,2) NOT NULL DEFAULT 0,
  created_at DATETIME(6) NOT NULL,
  notes TEXT NULL
);
INSERT INTO customers (id, email, name, country, balance, created_at, notes)
SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('Customer ', seq, ' Ünïcødé 🚢'),
       ELT(1 + seq % 5, 'DE', 'FR', 'JP', 'BR', 'US'), (seq * 37 % 100000) / 100,
       TIMESTAMP('2020-01-01') + INTERVAL seq MINUTE + INTERVAL (seq % 1000000) MICROSECOND,
       IF(seq % 7 = 0, NULL, REPEAT('n', seq % 50))
FROM seq_1_to_50000;

CREATE TABLE orders (
  id BIGINT NOT NULL PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  total DECIMAL(14,4) NOT NULL,
  placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY (customer_id),
  CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
);
INSERT INTO orders (id, customer_id, status, total, placed_at)
SELECT seq, 1 + seq % 50000, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
       (seq * 7919 % 1000000) / 100, TIMESTAMP('2023-01-01') + INTERVAL seq SECOND
FROM seq_1_to_250000;

CREATE TABLE order_items (
  order_id BIGINT NOT NULL,
  line SMALLINT NOT NULL,
  sku VARBINARY(16) NOT NULL,
  qty INT NOT NULL,
  PRIMARY KEY (order_id, line)
);
INSERT INTO order_items SELECT 1 + seq DIV 3, seq % 3, UNHEX(MD5(seq)), 1 + seq % 9
FROM seq_0_to_74999;

CREATE TABLE page_views (
  path VARCHAR(200) NOT NULL,
  viewed_at DATETIME NOT NULL,
  ms FLOAT NOT NULL
);
INSERT INTO page_views SELECT CONCAT('/p/', seq % 100), TIMESTAMP('2024-01-01') + INTERVAL seq SECOND,
       (seq % 1000) / 7 FROM seq_1_to_10000;
