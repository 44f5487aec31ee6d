-- Every kind of key Ferry chunks along, and tables without one.
DROP DATABASE IF EXISTS keys_src;
CREATE DATABASE keys_src;
USE keys_src;

-- Large enough for many chunks at chunk_rows = 100.
CREATE TABLE many (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(20));
INSERT INTO many SELECT seq * 3, CONCAT('v', seq) FROM seq_1_to_5000;
INSERT INTO many VALUES (18446744073709551615, 'max');

CREATE TABLE composite (a INT NOT NULL, b VARCHAR(10) NOT NULL, c DATETIME(6) NOT NULL, v INT,
  PRIMARY KEY (a, b, c));
INSERT INTO composite SELECT seq % 7, CONCAT('k', seq % 13), TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, seq
FROM seq_1_to_1500;

CREATE TABLE unique_only (u1 INT NOT NULL, u2 CHAR(3) NOT NULL, nullable_u INT NULL, v TEXT,
  UNIQUE KEY nu (nullable_u), UNIQUE KEY uk (u1, u2));
INSERT INTO unique_only SELECT seq DIV 10, LPAD(seq % 10, 3, '0'), IF(seq % 2, seq, NULL), REPEAT('u', seq % 20)
FROM seq_1_to_700;

CREATE TABLE no_key (a INT, b VARCHAR(10), KEY (a));
INSERT INTO no_key VALUES (1, 'dup'), (1, 'dup'), (1, 'dup'), (2, NULL), (NULL, NULL), (NULL, NULL);
INSERT INTO no_key SELECT seq % 50, 'x' FROM seq_1_to_450;

CREATE TABLE varchar_key (k VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci PRIMARY KEY, v INT);
INSERT INTO varchar_key SELECT CONCAT(ELT(1 + seq % 6, 'a', 'B', 'ä', 'Z', '🚢', ' '), seq), seq FROM seq_1_to_800;

CREATE TABLE empty_one (id INT PRIMARY KEY, v INT);

CREATE TABLE generated (id INT PRIMARY KEY, price DECIMAL(10,2), qty INT,
  total DECIMAL(12,2) AS (price * qty) STORED,
  label VARCHAR(40) AS (CONCAT('#', id)) VIRTUAL);
INSERT INTO generated (id, price, qty) SELECT seq, seq / 4, seq % 5 FROM seq_1_to_300;

CREATE TABLE dt_key (at DATETIME NOT NULL PRIMARY KEY, v INT);
INSERT INTO dt_key SELECT TIMESTAMP('2000-01-01') + INTERVAL seq HOUR, seq FROM seq_1_to_450;

CREATE TABLE invisible_col (id INT PRIMARY KEY, secret INT INVISIBLE, v INT);
INSERT INTO invisible_col (id, secret, v) VALUES (1, 42, 1), (2, 43, 2);
