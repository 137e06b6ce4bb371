-- Run once by the MariaDB image on an empty data directory (mounted into
-- /docker-entrypoint-initdb.d/ by deploy/compose.yaml), after it created the user
-- MARIADB_USER (`stampede`). Stampede creates its databases itself (CREATE DATABASE IF NOT
-- EXISTS, one per URL in storage.mysql.databases): let it create and use every database
-- whose name starts with `stampede_`.
GRANT ALL PRIVILEGES ON `stampede\_%`.* TO 'stampede'@'%';
FLUSH PRIVILEGES;
