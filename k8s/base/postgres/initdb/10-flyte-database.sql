-- Executed by the postgres image's entrypoint on first start only (empty data directory),
-- as POSTGRES_USER, connected to POSTGRES_DB (mlflow). MLflow uses "mlflow"; Flyte uses "flyte".
CREATE DATABASE flyte;
