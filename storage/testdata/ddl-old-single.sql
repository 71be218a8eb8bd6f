CREATE DATABASE IF NOT EXISTS msrpscope;

CREATE TABLE IF NOT EXISTS msrpscope.schema_migrations
(
    version UInt32,
    name String,
    applied DateTime
)
ENGINE = MergeTree()
ORDER BY version;

-- migration 1: frames
CREATE TABLE IF NOT EXISTS msrpscope.frames
(
    ts DateTime,
    ts_us UInt32,
    direction String,
    transport String,
    local_ip FixedString(16),
    local_port UInt16,
    remote_ip FixedString(16),
    remote_port UInt16,
    conn_id UInt64,
    session_id String,
    peer_session_id String,
    correlation_id String,
    transact_id String,
    method String,
    status UInt16,
    message_id String,
    byte_range String,
    content_type String,
    auth_user String,
    auth_response UInt8,
    flag String,
    size UInt64,
    body String,
    node String,
    batch_id UInt64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), correlation_id, ts);

-- migration 2: events
CREATE TABLE IF NOT EXISTS msrpscope.events
(
    ts DateTime,
    ts_us UInt32,
    event String,
    reason String,
    error String,
    direction String,
    transport String,
    local_ip FixedString(16),
    local_port UInt16,
    remote_ip FixedString(16),
    remote_port UInt16,
    conn_id UInt64,
    tls_subject String,
    node String,
    batch_id UInt64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), conn_id, ts);

-- migration 3: frames per minute
CREATE TABLE IF NOT EXISTS msrpscope.frames_per_minute
(
    minute DateTime,
    node String,
    method String,
    direction String,
    frames UInt64,
    bytes UInt64
)
ENGINE = SummingMergeTree((frames, bytes))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, method, direction);

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.frames_per_minute_mv TO msrpscope.frames_per_minute
AS SELECT toStartOfMinute(ts) AS minute, node, method, direction, count() AS frames, sum(size) AS bytes
FROM msrpscope.frames
GROUP BY minute, node, method, direction;

-- migration 4: failures per minute
CREATE TABLE IF NOT EXISTS msrpscope.failures_per_minute
(
    minute DateTime,
    node String,
    direction String,
    status UInt16,
    responses UInt64
)
ENGINE = SummingMergeTree((responses))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, direction, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.failures_per_minute_mv TO msrpscope.failures_per_minute
AS SELECT toStartOfMinute(ts) AS minute, node, direction, status, count() AS responses
FROM msrpscope.frames
WHERE status >= 300
GROUP BY minute, node, direction, status;

-- migration 5: auth results per minute
CREATE TABLE IF NOT EXISTS msrpscope.auth_per_minute
(
    minute DateTime,
    node String,
    status UInt16,
    responses UInt64
)
ENGINE = SummingMergeTree((responses))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.auth_per_minute_mv TO msrpscope.auth_per_minute
AS SELECT toStartOfMinute(ts) AS minute, node, status, count() AS responses
FROM msrpscope.frames
WHERE auth_response = 1 AND direction = 'out'
GROUP BY minute, node, status;

-- migration 6: connections per minute
CREATE TABLE IF NOT EXISTS msrpscope.connections_per_minute
(
    minute DateTime,
    node String,
    transport String,
    event String,
    reason String,
    connections UInt64
)
ENGINE = SummingMergeTree((connections))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, transport, event, reason);

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.connections_per_minute_mv TO msrpscope.connections_per_minute
AS SELECT toStartOfMinute(ts) AS minute, node, transport, event, reason, count() AS connections
FROM msrpscope.events
WHERE event IN ('accepted', 'connected', 'closed')
GROUP BY minute, node, transport, event, reason;

