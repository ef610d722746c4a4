-- For docker-compose's MariaDB (scripts/services.sh grants the same): the ODBC tests' schema
-- option creates databases named le_….
GRANT ALL ON `le\_%`.* TO 'leader'@'%';
