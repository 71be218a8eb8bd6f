#!/bin/sh
# Runs once, when the postgres volume is first initialised
# (/docker-entrypoint-initdb.d): homer-app keeps its users and settings in
# homer_config; heplify-server creates homer_data and its daily tables itself.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<-EOSQL
	CREATE DATABASE homer_config;
EOSQL
